//! Bounded-memory behaviour counters: bucketed ring counters over five windows, small
//! last-seen sets for distinct counts, integer running moments for amount z-scores, and a
//! sharded map of entities with a hard entry cap and sampled-LRU eviction.
//!
//! Every structure has a fixed size, so memory is `entries_max × entry size` per entity kind
//! ([`Shards::memory_bound_bytes`]); nothing grows with traffic.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The velocity windows, shortest first: 1 min, 1 h, 24 h, 7 d, 30 d.
pub const WINDOWS_S: [u32; 5] = [60, 3_600, 86_400, 7 * 86_400, 30 * 86_400];
/// Their names, as used in feature names (`payer_cnt_1h`).
pub const WINDOW_NAMES: [&str; 5] = ["1m", "1h", "24h", "7d", "30d"];
/// Buckets per window. A window then covers between `W × 5/6` and `W` of the past (the oldest
/// bucket leaves whole): 10 s granularity for 1 min, 10 min for 1 h, 4 h for 24 h, 28 h for 7 d,
/// 5 d for 30 d. Six buckets keep an entity's counters at 400 bytes.
pub const BUCKETS: usize = 6;

/// One window: counts and amount sums per bucket, the newest bucket's absolute index in `head`.
#[derive(Clone, Copy, Debug, Default)]
struct Ring {
    head: u32,
    count: [u32; BUCKETS],
    sum_fen: [i64; BUCKETS],
}

impl Ring {
    fn add(&mut self, bucket: u32, amount_fen: i64) {
        if bucket > self.head {
            // Clear the buckets skipped since the last event (at most all of them).
            let gap = (bucket - self.head).min(BUCKETS as u32);
            for k in 0..gap {
                let slot = (bucket - k) as usize % BUCKETS;
                self.count[slot] = 0;
                self.sum_fen[slot] = 0;
            }
            self.head = bucket;
        } else if self.head - bucket >= BUCKETS as u32 {
            // Older than the window: it no longer counts anywhere.
            return;
        }
        let slot = bucket as usize % BUCKETS;
        self.count[slot] = self.count[slot].saturating_add(1);
        self.sum_fen[slot] = self.sum_fen[slot].saturating_add(amount_fen);
    }

    /// Count and sum of the buckets `(bucket - BUCKETS, bucket]`, without changing the ring.
    fn read(&self, bucket: u32) -> (i64, i64) {
        // The slots hold buckets (head - BUCKETS, head]; only those also in the asked window count.
        let newest = bucket.min(self.head);
        let oldest = bucket
            .saturating_sub(BUCKETS as u32 - 1)
            .max(self.head.saturating_sub(BUCKETS as u32 - 1));
        if newest < oldest {
            return (0, 0);
        }
        let n = (newest - oldest + 1) as usize;
        // One division, then walk the slots with a wrap (this is the hottest loop of a decision).
        let mut slot = oldest as usize % BUCKETS;
        let mut count = 0i64;
        let mut sum = 0i64;
        for _ in 0..n {
            count += i64::from(self.count[slot]);
            sum = sum.saturating_add(self.sum_fen[slot]);
            slot += 1;
            if slot == BUCKETS {
                slot = 0;
            }
        }
        (count, sum)
    }
}

/// Counts and amount sums of one entity over the five windows.
#[derive(Clone, Copy, Debug, Default)]
pub struct Velocity {
    rings: [Ring; 5],
}

/// One window's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowFigures {
    pub count: i64,
    pub sum_fen: i64,
}

impl Velocity {
    pub fn add(&mut self, at_s: u32, amount_fen: i64) {
        for (ring, w) in self.rings.iter_mut().zip(WINDOWS_S) {
            ring.add(at_s / (w / BUCKETS as u32), amount_fen);
        }
    }

    /// The figures of every window as of `at_s` (events recorded before it).
    pub fn read(&self, at_s: u32) -> [WindowFigures; 5] {
        let mut out = [WindowFigures::default(); 5];
        for ((o, ring), w) in out.iter_mut().zip(&self.rings).zip(WINDOWS_S) {
            let (count, sum_fen) = ring.read(at_s / (w / BUCKETS as u32));
            *o = WindowFigures { count, sum_fen };
        }
        out
    }
}

/// The last `K` distinct values seen (as 32-bit hashes) with the time each was last seen.
/// `count_since` is exact up to `K` and saturates at `K`: when full, the value seen longest ago
/// is replaced, so the set always holds the `K` most recent distinct values.
#[derive(Clone, Copy, Debug)]
pub struct Distinct<const K: usize> {
    value: [u32; K],
    seen_s: [u32; K],
}

impl<const K: usize> Default for Distinct<K> {
    fn default() -> Self {
        Self {
            value: [0; K],
            seen_s: [0; K],
        }
    }
}

impl<const K: usize> Distinct<K> {
    pub fn insert(&mut self, value: u32, at_s: u32) {
        let mut oldest = 0;
        for i in 0..K {
            if self.seen_s[i] != 0 && self.value[i] == value {
                self.seen_s[i] = self.seen_s[i].max(at_s);
                return;
            }
            if self.seen_s[i] < self.seen_s[oldest] {
                oldest = i;
            }
        }
        self.value[oldest] = value;
        self.seen_s[oldest] = at_s.max(1);
    }

    /// Distinct values seen at or after `since_s`.
    pub fn count_since(&self, since_s: u32) -> i64 {
        self.seen_s
            .iter()
            .filter(|s| **s != 0 && **s >= since_s)
            .count() as i64
    }

    pub fn contains(&self, value: u32) -> bool {
        (0..K).any(|i| self.seen_s[i] != 0 && self.value[i] == value)
    }

    pub fn is_empty(&self) -> bool {
        self.seen_s.iter().all(|s| *s == 0)
    }
}

/// Running count, sum and sum of squares of amounts, in integers: no float drift, and the same
/// figures whatever the order of additions. When a term would overflow (or the count reaches
/// `COUNT_MAX`) all three are halved, which turns the lifetime mean into a slowly decaying one.
#[derive(Clone, Copy, Debug, Default)]
pub struct AmountMoments {
    n: u32,
    sum_fen: i64,
    sum_sq: u128,
}

impl AmountMoments {
    const COUNT_MAX: u32 = 1 << 20;

    pub fn add(&mut self, amount_fen: i64) {
        let a = amount_fen.max(0);
        let sq = (a as u128) * (a as u128);
        if self.n >= Self::COUNT_MAX
            || self.sum_fen.checked_add(a).is_none()
            || self.sum_sq.checked_add(sq).is_none()
        {
            self.n /= 2;
            self.sum_fen /= 2;
            self.sum_sq /= 2;
        }
        self.n += 1;
        self.sum_fen = self.sum_fen.saturating_add(a);
        self.sum_sq = self.sum_sq.saturating_add(sq);
    }

    pub fn count(&self) -> i64 {
        i64::from(self.n)
    }

    /// Mean in whole fen (rounded down); 0 without history.
    pub fn mean_fen(&self) -> i64 {
        if self.n == 0 {
            0
        } else {
            self.sum_fen / i64::from(self.n)
        }
    }

    /// `(amount − mean) / (σ + 100 fen)`: the +1 yuan keeps a payer who always pays the same
    /// amount from producing infinite scores. 0 with fewer than two amounts.
    pub fn z_score(&self, amount_fen: i64) -> f64 {
        if self.n < 2 {
            return 0.0;
        }
        let n = self.n as f64;
        let mean = self.sum_fen as f64 / n;
        // Population variance from the integer moments: (n·Σx² − (Σx)²) / n², exact in i128.
        let n_i = i128::from(self.n);
        let s = i128::from(self.sum_fen);
        let num = (n_i * self.sum_sq as i128 - s * s).max(0);
        let var = num as f64 / (n * n);
        (amount_fen as f64 - mean) / (var.sqrt() + 100.0)
    }
}

/// Passes already-keyed 64-bit hashes through: the keys are SipHash outputs under a secret key,
/// so they are uniform and cannot be chosen by a client to collide.
#[derive(Default)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type KeyIndex = HashMap<u64, u32, BuildHasherDefault<PassThrough>>;

/// Anything kept per entity: it says when it was last touched, for eviction.
pub trait Touched {
    fn last_seen_s(&self) -> u32;
}

/// One shard: entries in a dense vector (so eviction can sample them), a key → slot index.
struct Shard<T> {
    index: KeyIndex,
    entries: Vec<(u64, T)>,
    rng: u64,
}

/// A map from entity key to `T`, split into `SHARDS` independently locked shards, holding at
/// most `entries_max` entries. A full shard evicts the least recently seen of
/// `EVICTION_SAMPLE` randomly drawn entries (sampled LRU, as Redis does): O(1), and the evicted
/// entry is among the oldest few percent with high probability.
pub struct Shards<T> {
    shards: Vec<RwLock<Shard<T>>>,
    per_shard_max: usize,
}

const SHARDS: usize = 64;
const EVICTION_SAMPLE: usize = 8;

impl<T: Touched + Default> Shards<T> {
    pub fn new(entries_max: usize) -> Self {
        let per_shard_max = entries_max.div_ceil(SHARDS).max(1);
        let shards = (0..SHARDS)
            .map(|i| {
                RwLock::new(Shard {
                    index: KeyIndex::default(),
                    entries: Vec::new(),
                    rng: 0x9E37_79B9_7F4A_7C15 ^ (i as u64),
                })
            })
            .collect();
        Self {
            shards,
            per_shard_max,
        }
    }

    fn shard(&self, key: u64) -> &RwLock<Shard<T>> {
        // The top bits choose the shard; the map inside uses the low bits.
        &self.shards[(key >> 58) as usize % SHARDS]
    }

    /// Reads the entry under a shared lock; `None` if the entity is unknown.
    pub fn read<R>(&self, key: u64, f: impl FnOnce(&T) -> R) -> Option<R> {
        let shard = read_lock(self.shard(key));
        let slot = *shard.index.get(&key)?;
        shard.entries.get(slot as usize).map(|(_, t)| f(t))
    }

    /// Updates the entry, creating it (and evicting another if the shard is full).
    pub fn update(&self, key: u64, f: impl FnOnce(&mut T)) {
        let mut shard = write_lock(self.shard(key));
        let shard = &mut *shard;
        let slot = match shard.index.get(&key) {
            Some(slot) => *slot as usize,
            None => {
                if shard.entries.capacity() == 0 {
                    // The whole shard at once: no reallocation (and no copy of every entry) in
                    // the middle of a request later. Untouched pages cost no resident memory.
                    shard.entries.reserve_exact(self.per_shard_max);
                    shard.index.reserve(self.per_shard_max);
                }
                if shard.entries.len() >= self.per_shard_max {
                    evict_one(shard);
                }
                shard.entries.push((key, T::default()));
                let slot = shard.entries.len() - 1;
                shard.index.insert(key, slot as u32);
                slot
            }
        };
        if let Some((_, t)) = shard.entries.get_mut(slot) {
            f(t);
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| read_lock(s).entries.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn entries_max(&self) -> usize {
        self.per_shard_max * SHARDS
    }

    /// The most memory this map can take: per entry the value and its key, plus its index
    /// slot (a `hashbrown` bucket of key + u32 and a control byte, with buckets a power of two
    /// at most 8/7 of the entries: at most 2 × 8/7 × 17 < 40 bytes per entry). A shard
    /// reserves its capacity on first use; pages never written stay unbacked.
    pub fn memory_bound_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(u64, T)>();
        let index_slot = 40;
        self.entries_max() * (entry + index_slot)
    }
}

fn evict_one<T: Touched>(shard: &mut Shard<T>) {
    let len = shard.entries.len();
    if len == 0 {
        return;
    }
    let mut victim = 0usize;
    let mut victim_seen = u32::MAX;
    for _ in 0..EVICTION_SAMPLE.min(len) {
        shard.rng = splitmix64(shard.rng);
        let i = (shard.rng % len as u64) as usize;
        let seen = shard.entries[i].1.last_seen_s();
        if seen < victim_seen {
            victim = i;
            victim_seen = seen;
        }
    }
    let (old_key, _) = shard.entries.swap_remove(victim);
    shard.index.remove(&old_key);
    if let Some((moved_key, _)) = shard.entries.get(victim) {
        shard.index.insert(*moved_key, victim as u32);
    }
}

/// SplitMix64: a tiny, well-mixed step function for sampling (no crypto needed here).
pub fn splitmix64(state: u64) -> u64 {
    let mut z = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// A panic while holding a shard lock cannot leave counters in a state worse than "slightly
// off", so a poisoned lock is used as is rather than failing every later decision.
fn read_lock<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write_lock<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_counts_only_the_window() {
        let mut v = Velocity::default();
        let t0 = 1_800_000_000u32;
        v.add(t0, 100);
        v.add(t0 + 5, 200);
        let now = v.read(t0 + 6);
        assert_eq!(
            now[0],
            WindowFigures {
                count: 2,
                sum_fen: 300
            }
        );
        // 70 s later both have left the 1-minute window but not the 1-hour one.
        let later = v.read(t0 + 70);
        assert_eq!(later[0].count, 0);
        assert_eq!(
            later[1],
            WindowFigures {
                count: 2,
                sum_fen: 300
            }
        );
        // 31 days later nothing is left.
        let much_later = v.read(t0 + 31 * 86_400);
        assert!(much_later.iter().all(|w| w.count == 0));
    }

    #[test]
    fn ring_clears_skipped_buckets_on_add() {
        let mut v = Velocity::default();
        let t0 = 1_800_000_000u32;
        v.add(t0, 1);
        v.add(t0 + 3_600 * 2, 10);
        let w = v.read(t0 + 3_600 * 2);
        assert_eq!(
            w[0],
            WindowFigures {
                count: 1,
                sum_fen: 10
            }
        );
        assert_eq!(
            w[1],
            WindowFigures {
                count: 1,
                sum_fen: 10
            }
        );
        assert_eq!(
            w[2],
            WindowFigures {
                count: 2,
                sum_fen: 11
            }
        );
    }

    #[test]
    fn distinct_saturates_and_keeps_the_most_recent() {
        let mut d = Distinct::<4>::default();
        for i in 0..10u32 {
            d.insert(i + 1, 100 + i);
        }
        assert_eq!(d.count_since(0), 4);
        assert!(d.contains(10));
        assert!(!d.contains(1));
        assert_eq!(d.count_since(108), 2);
        d.insert(10, 200);
        assert_eq!(d.count_since(150), 1);
    }

    #[test]
    fn z_score_is_order_independent_and_finite() {
        let mut a = AmountMoments::default();
        let mut b = AmountMoments::default();
        let xs = [100, 250, 90, 5_000, 120];
        for x in xs {
            a.add(x);
        }
        for x in xs.iter().rev() {
            b.add(*x);
        }
        assert_eq!(a.z_score(10_000).to_bits(), b.z_score(10_000).to_bits());
        let mut same = AmountMoments::default();
        for _ in 0..5 {
            same.add(1_000);
        }
        assert_eq!(same.z_score(1_000), 0.0);
        assert!((same.z_score(2_000) - 10.0).abs() < 1e-12);
    }

    #[test]
    fn moments_survive_huge_amounts() {
        let mut a = AmountMoments::default();
        for _ in 0..1000 {
            a.add(i64::MAX / 4);
        }
        assert!(a.z_score(1).is_finite());
        assert!(a.count() > 0);
    }

    #[derive(Default)]
    struct Seen(u32);
    impl Touched for Seen {
        fn last_seen_s(&self) -> u32 {
            self.0
        }
    }

    #[test]
    fn shards_never_exceed_their_cap() {
        let m: Shards<Seen> = Shards::new(640);
        let mut key = 1u64;
        for t in 0..10_000u32 {
            key = splitmix64(key);
            m.update(key, |s| s.0 = t + 1);
        }
        assert!(m.len() <= m.entries_max());
        assert_eq!(m.entries_max(), 640);
        // The newest key is still there: eviction picks old entries.
        assert_eq!(m.read(key, |s| s.0), Some(10_000));
    }
}
