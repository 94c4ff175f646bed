//! The cross-day pool (挂账): a one-sided item may be a day-cut difference (a payment at
//! 23:59:59.9 booked on one side before midnight and on the other after), so it waits up to
//! `hold_days` for its other half to turn up in a later day's run before it becomes a
//! discrepancy. Pure: the caller loads the open pool and stores the [`Settlement`].

use time::Date;

use crate::matcher::{Discrepancy, compare};

/// One held item: the one-sided discrepancy and the business day it was found on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolItem {
    pub item: Discrepancy,
    pub day: Date,
}

/// What one day's run does with the pool and its own one-sided findings.
#[derive(Debug, Default)]
pub struct Settlement {
    /// Pool index and today's finding that complete each other and agree: both settled.
    pub matched_across_days: Vec<(usize, Discrepancy)>,
    /// Pool index and the combined two-sided discrepancy when the halves disagree.
    pub mismatched_across_days: Vec<(usize, Discrepancy)>,
    /// Today's one-sided findings to hold.
    pub hold: Vec<Discrepancy>,
    /// Pool items whose time is up: they become discrepancies of their class.
    pub expired: Vec<usize>,
    /// Today's findings that are not one-sided: discrepancies at once.
    pub report: Vec<Discrepancy>,
}

/// Pairs today's one-sided findings with the open pool, holds the rest, expires what waited
/// `hold_days` days. With `hold_days` 0 nothing is held.
pub fn settle(
    pool: &[PoolItem],
    found: Vec<Discrepancy>,
    today: Date,
    hold_days: u32,
) -> Settlement {
    let mut s = Settlement::default();
    let mut taken = vec![false; pool.len()];
    let mut by_key: std::collections::HashMap<crate::key::Key, Vec<usize>> =
        std::collections::HashMap::new();
    for (i, p) in pool.iter().enumerate() {
        by_key.entry(p.item.key).or_default().push(i);
    }
    for d in found {
        if !d.class.one_sided() {
            s.report.push(d);
            continue;
        }
        let other = by_key.get(&d.key).and_then(|ids| {
            ids.iter().copied().find(|&i| {
                let p = &pool[i].item;
                !taken[i] && p.class != d.class && p.class.one_sided()
            })
        });
        match other {
            Some(i) => {
                taken[i] = true;
                let p = pool[i].item;
                let channel = d.channel.or(p.channel);
                let platform = d.platform.or(p.platform);
                let class = match (channel, platform) {
                    (Some(c), Some(pl)) => compare(&c, &pl),
                    _ => Some(d.class),
                };
                match class {
                    None => s.matched_across_days.push((i, d)),
                    Some(class) => s.mismatched_across_days.push((
                        i,
                        Discrepancy {
                            class,
                            key: d.key,
                            channel,
                            platform,
                        },
                    )),
                }
            }
            None if hold_days == 0 => s.report.push(d),
            None => s.hold.push(d),
        }
    }
    for (i, p) in pool.iter().enumerate() {
        if !taken[i] && (today - p.day).whole_days() >= i64::from(hold_days) {
            s.expired.push(i);
        }
    }
    s
}
