//! Sort-merge matching of the two sides into discrepancy classes (reference §2.4).
//!
//! Each side arrives as sorted runs ([`crate::scan::Scanned`]); a k-way merge walks each in
//! key order and one linear pass pairs equal keys. Per key: the first channel row and the
//! platform record are compared (state, then amount, then fee); every further row of the
//! same key on a side is a [`Class::Duplicate`]. No hash table, no random access: the cost
//! is the scan and the sorts (reference §2.5: the naive hash join is 3–4× slower).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use crate::key::Key;
use crate::record::{FEE_UNKNOWN, Record, states_agree};
use crate::scan::{Scanned, Totals};

/// The discrepancy classes (差错分类).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Class {
    /// 长款: the channel has it, paygate does not.
    ChannelOnly,
    /// 短款: paygate has it, the channel does not.
    PlatformOnly,
    /// 金额不符.
    AmountMismatch,
    /// 状态不符.
    StatusMismatch,
    /// The channel charged another fee than its rate gives.
    FeeMismatch,
    /// The same key more than once on one side.
    Duplicate,
}

impl Class {
    pub const ALL: [Class; 6] = [
        Class::ChannelOnly,
        Class::PlatformOnly,
        Class::AmountMismatch,
        Class::StatusMismatch,
        Class::FeeMismatch,
        Class::Duplicate,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Class::ChannelOnly => "CHANNEL_ONLY",
            Class::PlatformOnly => "PLATFORM_ONLY",
            Class::AmountMismatch => "AMOUNT_MISMATCH",
            Class::StatusMismatch => "STATUS_MISMATCH",
            Class::FeeMismatch => "FEE_MISMATCH",
            Class::Duplicate => "DUPLICATE",
        }
    }

    pub fn parse(s: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// One-sided items may be a day-cut difference: they wait in the cross-day pool.
    pub const fn one_sided(self) -> bool {
        matches!(self, Class::ChannelOnly | Class::PlatformOnly)
    }
}

/// One disagreement, with both sides' records as evidence (`None` where a side has none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Discrepancy {
    pub class: Class,
    pub key: Key,
    pub channel: Option<Record>,
    pub platform: Option<Record>,
}

/// What matching found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Keys present on both sides that agree.
    pub matched: u64,
    /// Platform records rightly absent from the bill (unpaid orders, refused refunds).
    pub absent_as_expected: u64,
    pub discrepancies: Vec<Discrepancy>,
    pub channel: Totals,
    pub platform: Totals,
}

impl Outcome {
    pub fn count(&self, class: Class) -> usize {
        self.discrepancies
            .iter()
            .filter(|d| d.class == class)
            .count()
    }
}

/// Compares one channel row with the platform's record of the same key.
pub fn compare(channel: &Record, platform: &Record) -> Option<Class> {
    if !states_agree(channel.state, platform.state) {
        return Some(Class::StatusMismatch);
    }
    if channel.amount_fen != platform.amount_fen {
        return Some(Class::AmountMismatch);
    }
    if platform.fee_milli_fen != FEE_UNKNOWN && channel.fee_milli_fen != platform.fee_milli_fen {
        return Some(Class::FeeMismatch);
    }
    None
}

/// The records of sorted runs in (key, source) order.
struct Merge<'a> {
    runs: &'a [Vec<Record>],
    pos: Vec<usize>,
    heap: BinaryHeap<Reverse<(Key, u64, u32)>>,
}

impl<'a> Merge<'a> {
    fn new(runs: &'a [Vec<Record>]) -> Merge<'a> {
        let mut heap = BinaryHeap::with_capacity(runs.len());
        for (i, r) in runs.iter().enumerate() {
            if let Some(first) = r.first() {
                heap.push(Reverse((first.key, first.source, i as u32)));
            }
        }
        Merge {
            runs,
            pos: vec![0; runs.len()],
            heap,
        }
    }

    fn peek_key(&self) -> Option<Key> {
        self.heap.peek().map(|Reverse((k, _, _))| *k)
    }

    fn next(&mut self) -> Option<&'a Record> {
        let mut top = self.heap.peek_mut()?;
        let run = top.0.2 as usize;
        let record = &self.runs[run][self.pos[run]];
        self.pos[run] += 1;
        match self.runs[run].get(self.pos[run]) {
            Some(n) => *top = Reverse((n.key, n.source, run as u32)),
            None => {
                std::collections::binary_heap::PeekMut::pop(top);
            }
        }
        Some(record)
    }

    /// The next key's first record; its further records (duplicates) go to `extra`.
    fn group(&mut self, extra: &mut Vec<Record>) -> Option<Record> {
        extra.clear();
        let first = *self.next()?;
        while self.peek_key() == Some(first.key) {
            if let Some(r) = self.next() {
                extra.push(*r);
            }
        }
        Some(first)
    }
}

/// Matches the scanned channel bill against the scanned platform records.
pub fn match_sides(channel: &Scanned, platform: &Scanned) -> Outcome {
    let mut out = Outcome {
        channel: channel.totals,
        platform: platform.totals,
        ..Outcome::default()
    };
    let mut a = Merge::new(&channel.runs);
    let mut b = Merge::new(&platform.runs);
    let (mut a_extra, mut b_extra) = (Vec::new(), Vec::new());
    loop {
        let order = match (a.peek_key(), b.peek_key()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(x), Some(y)) => x.cmp(&y),
        };
        let c = if order != Ordering::Greater {
            a.group(&mut a_extra)
        } else {
            None
        };
        let p = if order != Ordering::Less {
            b.group(&mut b_extra)
        } else {
            None
        };
        if order == Ordering::Less {
            b_extra.clear();
        }
        if order == Ordering::Greater {
            a_extra.clear();
        }
        let key = match (c, p) {
            (Some(c), _) => c.key,
            (None, Some(p)) => p.key,
            (None, None) => break,
        };
        match (c, p) {
            (Some(c), Some(p)) => match compare(&c, &p) {
                Some(class) => out.discrepancies.push(Discrepancy {
                    class,
                    key,
                    channel: Some(c),
                    platform: Some(p),
                }),
                None => out.matched += 1,
            },
            (Some(c), None) => out.discrepancies.push(Discrepancy {
                class: Class::ChannelOnly,
                key,
                channel: Some(c),
                platform: None,
            }),
            (None, Some(p)) if p.state.absent_from_bill_is_normal() => out.absent_as_expected += 1,
            (None, Some(p)) => out.discrepancies.push(Discrepancy {
                class: Class::PlatformOnly,
                key,
                channel: None,
                platform: Some(p),
            }),
            (None, None) => {}
        }
        for d in a_extra.drain(..) {
            out.discrepancies.push(Discrepancy {
                class: Class::Duplicate,
                key,
                channel: Some(d),
                platform: p,
            });
        }
        for d in b_extra.drain(..) {
            out.discrepancies.push(Discrepancy {
                class: Class::Duplicate,
                key,
                channel: c,
                platform: Some(d),
            });
        }
    }
    out
}
