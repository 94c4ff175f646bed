//! paygate's end-of-day reconciliation engine (对账): a channel's trade bill against the
//! platform's payments and refunds of the same business day.
//!
//! Both sides are normalised at parse time into 48-byte [`Record`]s (a packed 128-bit
//! [`Key`], amounts in fen, fee in 1/1000 fen, a state enum, where the row came from).
//! Files are scanned in parallel units with positioned reads ([`scan`]), each unit sorted
//! where it was parsed; a k-way merge and one linear pass then pair equal keys
//! ([`matcher`]). The cross-day [`pool`] holds one-sided items for a configurable number of
//! days. Everything here is pure or reads files: the gateway loads the platform side from
//! its store, downloads the bill, stores the findings and repairs (`paygate-server`).
//!
//! ```
//! use paygate_recon::{reconcile, synth, Class};
//!
//! let spec = synth::DaySpec {
//!     date: time::macros::date!(2026 - 11 - 28),
//!     orders: 2_000,
//!     refund_every: 10,
//!     unpaid_every: 50,
//!     faults: synth::Faults::each(2),
//!     fee_rate_bp: 60,
//!     seed: 7,
//! };
//! let (mut bill, mut platform) = (Vec::new(), Vec::new());
//! let truth = synth::generate(&spec, &mut bill, &mut platform)?;
//! let outcome = reconcile(&bill, &platform, 2)?;
//! assert_eq!(outcome.discrepancies.len(), truth.expected.len());
//! assert_eq!(outcome.count(Class::Duplicate), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod bill;
pub mod key;
pub mod matcher;
pub mod platform;
pub mod pool;
pub mod record;
pub mod scan;
pub mod synth;

pub use key::{Key, Kind};
pub use matcher::{Class, Discrepancy, Outcome, compare, match_sides};
pub use record::{FEE_UNKNOWN, Record, State, states_agree};
pub use scan::{Mem, ScanError, Scanned, Source, Totals};

/// Reconciles a trade bill against a platform file (see [`platform`]) with `threads`
/// workers: both files are scanned together, the bill's totals are checked against its
/// summary row, then the sides are matched.
pub fn reconcile(
    bill: &dyn Source,
    platform: &dyn Source,
    threads: usize,
) -> Result<Outcome, ScanError> {
    let layout = bill::open_bill(bill)?;
    let jobs = [
        scan::Job {
            source: bill,
            start: layout.data_start,
            end: layout.data_end,
            parser: &layout.parser,
        },
        scan::Job {
            source: platform,
            start: 0,
            end: platform.len(),
            parser: &platform::PlatformParser,
        },
    ];
    let mut scanned = scan::scan(&jobs, threads, scan::UNIT_BYTES_DEFAULT)?;
    let platform_side = scanned.pop().unwrap_or_default();
    let channel_side = scanned.pop().unwrap_or_default();
    bill::check_summary(&layout.summary, &channel_side.totals)?;
    Ok(match_sides(&channel_side, &platform_side))
}

/// Scans only a bill (the gateway builds the platform side from its store).
pub fn scan_bill(
    bill: &dyn Source,
    threads: usize,
) -> Result<(bill::BillLayout, Scanned), ScanError> {
    let layout = bill::open_bill(bill)?;
    let jobs = [scan::Job {
        source: bill,
        start: layout.data_start,
        end: layout.data_end,
        parser: &layout.parser,
    }];
    let scanned = scan::scan(&jobs, threads, scan::UNIT_BYTES_DEFAULT)?
        .pop()
        .unwrap_or_default();
    bill::check_summary(&layout.summary, &scanned.totals)?;
    Ok((layout, scanned))
}

/// Builds one sorted run from records the caller collected (the platform side from a store).
pub fn scanned_from(mut records: Vec<Record>, totals: Totals) -> Scanned {
    records.sort_unstable_by(|a, b| a.key.cmp(&b.key).then(a.source.cmp(&b.source)));
    Scanned {
        runs: vec![records],
        totals,
    }
}
