//! End-of-day reconciliation (issue 9): one business day (Beijing, cut at 00:00) of one
//! channel. Downloads the channel's trade bill(s) and fund-flow bill (hash-checked), scans
//! them into compact records (`paygate_recon`), reads the day's payments and refunds from the
//! store page by page, matches, settles the cross-day pool, stores the run with every
//! discrepancy and both sides' evidence in one transaction, then repairs what is safe:
//! a status the channel knows better (a lost notification, a refund outcome never heard) is
//! settled by querying that one order or refund at the channel and applying the answer
//! through the ordinary state machine (`flow::apply_channel_transaction`,
//! `refunds::settle_by_query`), which writes the repair record, the ledger posting and the
//! merchant's notification with the state change. Everything else waits for an operator.

use std::collections::HashMap;

use paygate_core::error::{ApiError, ErrorCode};
use paygate_core::timefmt::{BEIJING, bill_time_beijing, format_date};
use paygate_recon::pool::{PoolItem, settle};
use paygate_recon::{Class, Discrepancy, FEE_UNKNOWN, Key, Kind, Record, Scanned, State, Totals};
use paygate_store::recon::{
    DISCREPANCY_AUTO_RESOLVED, DISCREPANCY_OPEN, DiscrepancyRecord, ReconCursor, ReconPlatformRow,
    ReconPoolRecord, ReconRunRecord, ReconSave, ResolveDiscrepancy,
};
use paygate_store::{AttemptState, OrderState, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::{Date, OffsetDateTime};

use crate::http::AppState;

/// The repair source written on orders the reconciliation fixed (flow.rs names the way).
pub const REPAIR_SOURCE: &str = "reconciliation";
/// Rows per page of the store's day read.
const PAGE_ROWS: u32 = 5_000;
/// Findings repaired automatically per run at most; the rest stay OPEN for the next run or
/// an operator.
const AUTO_RESOLVE_MAX: usize = 1_000;

/// `[recon]` in the configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconConfig {
    /// Run yesterday's reconciliation daily (all channels) after `run_after`.
    pub enabled: bool,
    /// Beijing time `HH:MM` after which yesterday is reconciled (bills exist after ~10:00).
    pub run_after: String,
    /// Days a one-sided item waits in the cross-day pool before it is a discrepancy.
    pub hold_days: u32,
    /// Repair safe findings by querying the channel.
    pub auto_resolve: bool,
    /// Scanner threads.
    pub threads: usize,
    /// How often the scheduler checks whether a day is due, in seconds.
    pub check_interval_s: u64,
}

impl Default for ReconConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            run_after: "10:30".into(),
            hold_days: 2,
            auto_resolve: true,
            threads: 2,
            check_interval_s: 300,
        }
    }
}

/// What a run did, as `paygate recon run` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub bill_date: String,
    pub channel_id: String,
    pub bill_rows: u64,
    pub platform_rows: u64,
    pub matched: u64,
    pub counts: HashMap<&'static str, u64>,
    pub pool: serde_json::Value,
    pub auto_resolved: usize,
    pub open: usize,
    pub balanced: bool,
}

fn fail(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::SystemError, message)
}

fn store_err(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "reconciliation store call failed");
    fail(format!("store: {e}"))
}

/// The business day's bounds, `[00:00, next 00:00)` Beijing time.
pub fn day_bounds(date: Date) -> (OffsetDateTime, OffsetDateTime) {
    let start = date.midnight().assume_offset(BEIJING);
    (start, start + time::Duration::days(1))
}

/// The channel's bills of the day, scanned; plus their hashes and the fund-flow totals.
struct ChannelSide {
    scanned: Scanned,
    /// Each bill's bytes and header line, for the evidence rows; a record's bill is
    /// `source >> BILL_INDEX_SHIFT`, its line offset the bits below.
    bills: Vec<(Vec<u8>, Vec<u8>)>,
    trade_sha1: Option<String>,
    fundflow_sha1: Option<String>,
    fund_flow: Option<paygate_wxpay::bill::FundFlowSummary>,
}

/// Bill offsets are below 2^40 (1 TiB); the bill's index rides above them.
const BILL_INDEX_SHIFT: u32 = 40;

async fn channel_side(
    app: &AppState,
    date: Date,
    channel_id: &str,
) -> Result<ChannelSide, ApiError> {
    let channel = app.channel(channel_id)?;
    let mut subs = vec![paygate_channel::SubMerchant::default()];
    if channel.kind() == paygate_channel::ChannelKind::WxPartner {
        subs.clear();
        for m in app.store.list_merchants().await.map_err(store_err)? {
            if let Some(sub) = app.routing.sub_for(&m, channel_id) {
                if !subs.contains(&sub) {
                    subs.push(sub);
                }
            }
        }
    }
    let mut side = ChannelSide {
        scanned: Scanned::default(),
        bills: Vec::new(),
        trade_sha1: None,
        fundflow_sha1: None,
        fund_flow: None,
    };
    let mut hashes = Vec::new();
    for sub in &subs {
        let Some(bill) = channel
            .trade_bill(date, sub)
            .await
            .map_err(|e| fail(format!("trade bill: {e}")))?
        else {
            continue;
        };
        let index = side.bills.len() as u64;
        let threads = app.config.recon.threads.max(1);
        let (_, scanned) = paygate_recon::scan_bill(&bill.bytes, threads)
            .map_err(|e| fail(format!("trade bill {}: {e}", bill.sha1)))?;
        let header =
            paygate_recon::bill::header_line(&bill.bytes).map_err(|e| fail(e.to_string()))?;
        side.scanned.totals.add(&scanned.totals);
        for mut run in scanned.runs {
            for r in &mut run {
                r.source |= index << BILL_INDEX_SHIFT;
            }
            side.scanned.runs.push(run);
        }
        hashes.push(bill.sha1.clone());
        side.bills.push((bill.bytes, header));
    }
    side.trade_sha1 = (!hashes.is_empty()).then(|| hashes.join(","));
    if let Some(flow) = channel
        .fund_flow_bill(date)
        .await
        .map_err(|e| fail(format!("fund-flow bill: {e}")))?
    {
        let parsed = paygate_wxpay::bill::FundFlowBill::parse(&flow.bytes)
            .map_err(|e| fail(format!("fund-flow bill: {e}")))?;
        parsed
            .verify_summary()
            .map_err(|e| fail(format!("fund-flow bill: {e}")))?;
        side.fundflow_sha1 = Some(flow.sha1);
        side.fund_flow = Some(parsed.summary);
    }
    Ok(side)
}

fn platform_state(kind: Kind, stored: &str) -> Result<State, ApiError> {
    match kind {
        Kind::Payment => State::of_order_state(stored),
        Kind::Refund => State::of_refund_state(stored),
    }
    .ok_or_else(|| fail(format!("unknown stored state {stored}")))
}

fn record_of(
    row: &ReconPlatformRow,
    source: u64,
    fee_rate_bp: Option<i64>,
) -> Result<Record, ApiError> {
    let kind = if row.kind == "R" {
        Kind::Refund
    } else {
        Kind::Payment
    };
    let state = platform_state(kind, &row.state)?;
    let fee_milli_fen = match (kind, fee_rate_bp) {
        (Kind::Payment, Some(bp)) => paygate_recon::synth::fee_fen(row.amount_fen, bp) * 1000,
        _ => FEE_UNKNOWN,
    };
    Ok(Record {
        key: Key::new(kind, row.out_no.as_bytes()),
        amount_fen: row.amount_fen,
        fee_milli_fen,
        source,
        time_s: u32::try_from(row.at.unix_timestamp()).unwrap_or(0),
        state,
    })
}

/// The day's payments and refunds from the store, page by page.
async fn platform_side(
    app: &AppState,
    date: Date,
    channel_id: &str,
    fee_rate_bp: Option<i64>,
) -> Result<(Scanned, Vec<ReconPlatformRow>), ApiError> {
    let (from, to) = day_bounds(date);
    let mut rows = Vec::new();
    for kind in ["P", "R"] {
        let mut after: Option<ReconCursor> = None;
        loop {
            let page = app
                .store
                .recon_platform_page(kind, channel_id, from, to, after.as_ref(), PAGE_ROWS)
                .await
                .map_err(store_err)?;
            let Some(last) = page.last() else { break };
            after = Some(last.cursor());
            let full = page.len() as u32 == PAGE_ROWS;
            rows.extend(page);
            if !full {
                break;
            }
        }
    }
    let mut totals = Totals::default();
    let mut records = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let r = record_of(row, i as u64, fee_rate_bp)?;
        totals.rows += 1;
        match r.kind() {
            Kind::Payment => {
                totals.payments += 1;
                totals.payment_fen += i128::from(r.amount_fen);
            }
            Kind::Refund => {
                totals.refunds += 1;
                totals.refund_fen += i128::from(r.amount_fen);
            }
        }
        records.push(r);
    }
    Ok((paygate_recon::scanned_from(records, totals), rows))
}

/// A channel-only key paygate knows after all (an unpaid order whose notification was lost,
/// or a payment booked on another day): its store row, or `None` if paygate never had it.
async fn probe(app: &AppState, d: &Discrepancy) -> Result<Option<ReconPlatformRow>, ApiError> {
    let Some(no) = d.key.text() else {
        return Ok(None);
    };
    match d.key.kind() {
        Kind::Payment => {
            let Some((order, attempt)) = app.store.find_attempt(&no).await.map_err(store_err)?
            else {
                return Ok(None);
            };
            // The attempt decides: a paid order's other attempts were never paid in paygate's
            // books, so a channel that has one paid is a payment paygate does not know of
            // (a duplicate), not a match.
            let state = match attempt.state {
                AttemptState::Paid => order.state,
                AttemptState::Closed | AttemptState::Failed => OrderState::Closed,
                _ => OrderState::Notpay,
            };
            Ok(Some(ReconPlatformRow {
                kind: "P".into(),
                out_no: attempt.attempt_id,
                transaction_id: order.transaction_id,
                mchid: order.mchid,
                amount_fen: order.total_fen,
                state: state.as_str().to_string(),
                at: order.success_time.unwrap_or(order.created_at),
            }))
        }
        Kind::Refund => {
            let Some(r) = app.store.get_refund_by_id(&no).await.map_err(store_err)? else {
                return Ok(None);
            };
            Ok(Some(ReconPlatformRow {
                kind: "R".into(),
                out_no: r.refund_id,
                transaction_id: r.transaction_id,
                mchid: r.mchid,
                amount_fen: r.amount_fen,
                state: r.state.as_str().to_string(),
                at: r.created_at,
            }))
        }
    }
}

/// Whether a channel-only key's platform record belongs to another business day's platform
/// side, where it was (or will be) found one-sided: a day-cut item the pool pairs. Payments
/// count by their success time, refunds by their creation (as the day's read selects them);
/// a record whose absence from a bill is normal (unpaid, closed, refused) was never held.
fn booked_on_another_day(p: &Record, at: OffsetDateTime, date: Date) -> bool {
    let (from, to) = day_bounds(date);
    !p.state.absent_from_bill_is_normal() && (at < from || at >= to)
}

fn record_json(r: &Record) -> serde_json::Value {
    json!({
        "kind": r.kind().as_str(),
        "out_no": r.key.text(),
        "amount_fen": r.amount_fen,
        "fee_milli_fen": (r.fee_milli_fen != FEE_UNKNOWN).then_some(r.fee_milli_fen),
        "state": r.state.as_str(),
        "time": OffsetDateTime::from_unix_timestamp(i64::from(r.time_s)).map(bill_time_beijing).unwrap_or_default(),
    })
}

fn record_from_json(kind: &str, out_no: &str, v: &serde_json::Value) -> Option<Record> {
    let kind = if kind == "R" {
        Kind::Refund
    } else {
        Kind::Payment
    };
    let time = v.get("time")?.as_str()?;
    Some(Record {
        key: Key::new(kind, out_no.as_bytes()),
        amount_fen: v.get("amount_fen")?.as_i64()?,
        fee_milli_fen: v
            .get("fee_milli_fen")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(FEE_UNKNOWN),
        source: u64::MAX,
        time_s: paygate_recon::scan::parse_bill_time(time.as_bytes()).unwrap_or(0),
        state: State::parse(v.get("state")?.as_str()?)?,
    })
}

struct Evidence<'a> {
    side: &'a ChannelSide,
    rows: &'a [ReconPlatformRow],
    probed: &'a HashMap<Key, ReconPlatformRow>,
}

impl Evidence<'_> {
    fn channel(&self, r: &Record) -> serde_json::Value {
        let mut v = record_json(r);
        let index = (r.source >> BILL_INDEX_SHIFT) as usize;
        let offset = r.source & ((1 << BILL_INDEX_SHIFT) - 1);
        if let Some((bytes, header)) = self.side.bills.get(index).filter(|_| r.source != u64::MAX) {
            if let Ok(row) = paygate_recon::bill::evidence_row(bytes, header, offset) {
                v["bill_row"] = serde_json::to_value(row).unwrap_or_default();
            }
        }
        v
    }

    fn platform_row(&self, r: &Record) -> Option<&ReconPlatformRow> {
        self.rows
            .get(r.source as usize)
            .filter(|row| row.out_no.as_bytes() == r.key.text().unwrap_or_default().as_bytes())
            .or_else(|| self.probed.get(&r.key))
    }

    fn platform(&self, r: &Record) -> serde_json::Value {
        let mut v = record_json(r);
        if let Some(row) = self.platform_row(r) {
            v["transaction_id"] = json!(row.transaction_id);
            v["mchid"] = json!(row.mchid);
            v["stored_state"] = json!(row.state);
        }
        v
    }
}

fn kind_code(k: Kind) -> &'static str {
    match k {
        Kind::Payment => "P",
        Kind::Refund => "R",
    }
}

/// Reconciles `date` on `channel_id`, stores the run, repairs what is safe.
pub async fn run_day(app: &AppState, date: Date, channel_id: &str) -> Result<RunReport, ApiError> {
    let started = OffsetDateTime::now_utc();
    let bill_date = format_date(date);
    let fee_rate_bp = fee_rate_bp(app, channel_id);
    let side = channel_side(app, date, channel_id).await?;
    let (platform, rows) = platform_side(app, date, channel_id, fee_rate_bp).await?;
    let outcome = paygate_recon::match_sides(&side.scanned, &platform);

    // Channel-only keys paygate does know become two-sided findings now.
    let mut found = Vec::with_capacity(outcome.discrepancies.len());
    let mut probed = HashMap::new();
    for d in &outcome.discrepancies {
        if d.class != Class::ChannelOnly {
            found.push(*d);
            continue;
        }
        let (Some(c), Some(row)) = (d.channel, probe(app, d).await?) else {
            found.push(*d);
            continue;
        };
        let p = record_of(&row, u64::MAX, fee_rate_bp)?;
        probed.insert(d.key, row.clone());
        let other_day = booked_on_another_day(&p, row.at, date);
        match paygate_recon::compare(&c, &p) {
            // Booked on another day: the pool pairs it there.
            _ if other_day => found.push(*d),
            Some(class) => found.push(Discrepancy {
                class,
                key: d.key,
                channel: Some(c),
                platform: Some(p),
            }),
            None => {}
        }
    }

    let mut held = app
        .store
        .recon_pool_held(channel_id)
        .await
        .map_err(store_err)?;
    // A re-run of a day pairs again what its first run settled, rather than holding the
    // other halves anew (they would expire into false discrepancies).
    held.extend(
        app.store
            .recon_pool_settled_on(channel_id, &bill_date)
            .await
            .map_err(store_err)?,
    );
    let (pool, still_held): (Vec<PoolItem>, Vec<bool>) = held
        .iter()
        .filter_map(|h| {
            let day = paygate_core::timefmt::parse_date(&h.bill_date)?;
            let v: serde_json::Value = serde_json::from_str(&h.record_json).ok()?;
            let r = record_from_json(&h.kind, &h.out_no, &v)?;
            let class = Class::parse(&h.class)?;
            let (channel, platform) = if class == Class::ChannelOnly {
                (Some(r), None)
            } else {
                (None, Some(r))
            };
            let item = PoolItem {
                item: Discrepancy {
                    class,
                    key: r.key,
                    channel,
                    platform,
                },
                day,
            };
            Some((item, h.state == paygate_store::recon::POOL_HELD))
        })
        .unzip();
    let mut settlement = settle(&pool, found, date, app.config.recon.hold_days);
    // Only what still waits can run out of time.
    settlement.expired.retain(|&i| still_held[i]);

    let run_id = paygate_core::ids::row_id();
    let evidence = Evidence {
        side: &side,
        rows: &rows,
        probed: &probed,
    };
    let mut discrepancies: Vec<Discrepancy> = settlement.report.clone();
    discrepancies.extend(settlement.mismatched_across_days.iter().map(|(_, d)| *d));
    discrepancies.extend(settlement.expired.iter().map(|&i| pool[i].item));
    let mut seq: HashMap<(Class, Key), i64> = HashMap::new();
    let now = OffsetDateTime::now_utc();
    let records: Vec<DiscrepancyRecord> = discrepancies
        .iter()
        .map(|d| {
            let n = seq.entry((d.class, d.key)).or_insert(0);
            let this = *n;
            *n += 1;
            let row = d.platform.as_ref().and_then(|p| evidence.platform_row(p));
            DiscrepancyRecord {
                id: paygate_core::ids::row_id(),
                run_id: run_id.clone(),
                bill_date: bill_date.clone(),
                channel_id: channel_id.to_string(),
                class: d.class.as_str().to_string(),
                kind: kind_code(d.key.kind()).to_string(),
                out_no: d.key.text().unwrap_or_else(|| d.key.to_string()),
                seq: this,
                mchid: row.map(|r| r.mchid.clone()),
                transaction_id: row.map(|r| r.transaction_id.clone()),
                channel_json: d.channel.as_ref().map(|c| evidence.channel(c).to_string()),
                platform_json: d
                    .platform
                    .as_ref()
                    .map(|p| evidence.platform(p).to_string()),
                state: DISCREPANCY_OPEN.into(),
                resolution: None,
                resolved_by: None,
                reason: None,
                created_at: now,
                resolved_at: None,
            }
        })
        .collect();
    let hold: Vec<ReconPoolRecord> = settlement
        .hold
        .iter()
        .map(|d| {
            let r = d
                .channel
                .or(d.platform)
                .unwrap_or_else(|| unreachable_record(d.key));
            ReconPoolRecord {
                id: paygate_core::ids::row_id(),
                channel_id: channel_id.to_string(),
                bill_date: bill_date.clone(),
                class: d.class.as_str().to_string(),
                kind: kind_code(d.key.kind()).to_string(),
                out_no: d.key.text().unwrap_or_else(|| d.key.to_string()),
                record_json: record_json(&r).to_string(),
                state: "HELD".into(),
                settled_date: None,
                created_at: now,
            }
        })
        .collect();
    let mut settled: Vec<(String, String)> = Vec::new();
    settled.extend(
        settlement
            .matched_across_days
            .iter()
            .map(|(i, _)| (held_id(&held, &pool, *i), "MATCHED".to_string())),
    );
    settled.extend(
        settlement
            .mismatched_across_days
            .iter()
            .map(|(i, _)| (held_id(&held, &pool, *i), "MISMATCHED".to_string())),
    );
    settled.extend(
        settlement
            .expired
            .iter()
            .map(|&i| (held_id(&held, &pool, i), "EXPIRED".to_string())),
    );

    // The ledger's movements of the day are read before any repair below posts more.
    let (from, to) = day_bounds(date);
    let ledger_day = app
        .store
        .ledger_clearing_day(channel_id, from, to)
        .await
        .map_err(store_err)?;
    let mut balances = crate::recon_balance::balances(
        &bill_date,
        channel_id,
        &side.scanned,
        &platform,
        &rows,
        side.fund_flow.as_ref(),
        now,
    );
    balances.extend(crate::recon_ledger::balances(
        &bill_date,
        channel_id,
        &ledger_day,
        &side.scanned,
        &platform,
        &rows,
        now,
    ));
    let balanced = balances.iter().all(|b| b.balanced);
    let mut counts: HashMap<&'static str, u64> =
        Class::ALL.iter().map(|c| (c.as_str(), 0)).collect();
    for d in &discrepancies {
        *counts.entry(d.class.as_str()).or_default() += 1;
    }
    let pool_summary = json!({
        "held": hold.len(),
        "matched_across_days": settlement.matched_across_days.len(),
        "mismatched_across_days": settlement.mismatched_across_days.len(),
        "expired": settlement.expired.len(),
    });
    let summary = json!({
        "counts": counts,
        "pool": pool_summary,
        "channel": side.scanned.totals,
        "platform": platform.totals,
        "absent_as_expected": outcome.absent_as_expected,
        "fund_flow": side.fund_flow,
    });
    let run = ReconRunRecord {
        run_id: run_id.clone(),
        bill_date: bill_date.clone(),
        channel_id: channel_id.to_string(),
        status: "DONE".into(),
        started_at: started,
        finished_at: OffsetDateTime::now_utc(),
        bill_rows: side.scanned.totals.rows as i64,
        platform_rows: platform.totals.rows as i64,
        matched: outcome.matched as i64,
        discrepancies: records.len() as i64,
        trade_bill_sha1: side.trade_sha1.clone(),
        fundflow_bill_sha1: side.fundflow_sha1.clone(),
        summary_json: summary.to_string(),
        error: None,
    };
    app.store
        .save_recon_run(&ReconSave {
            run,
            discrepancies: records.clone(),
            hold,
            settled,
            balances,
        })
        .await
        .map_err(store_err)?;
    let auto_resolved = if app.config.recon.auto_resolve {
        auto_resolve(app, &records).await
    } else {
        0
    };
    Ok(RunReport {
        run_id,
        bill_date,
        channel_id: channel_id.to_string(),
        bill_rows: side.scanned.totals.rows,
        platform_rows: platform.totals.rows,
        matched: outcome.matched,
        counts,
        pool: pool_summary,
        auto_resolved,
        open: records.len() - auto_resolved,
        balanced,
    })
}

/// A held one-sided item always carries its side's record; this only satisfies the types.
fn unreachable_record(key: Key) -> Record {
    Record {
        key,
        amount_fen: 0,
        fee_milli_fen: FEE_UNKNOWN,
        source: u64::MAX,
        time_s: 0,
        state: State::Unpaid,
    }
}

fn held_id(held: &[ReconPoolRecord], pool: &[PoolItem], i: usize) -> String {
    // `pool` was built from `held` in order, skipping unreadable rows: find by key and day.
    let p = &pool[i];
    held.iter()
        .find(|h| {
            paygate_core::timefmt::parse_date(&h.bill_date) == Some(p.day)
                && Key::new(
                    if h.kind == "R" {
                        Kind::Refund
                    } else {
                        Kind::Payment
                    },
                    h.out_no.as_bytes(),
                ) == p.item.key
                && h.class == p.item.class.as_str()
        })
        .map(|h| h.id.clone())
        .unwrap_or_default()
}

fn fee_rate_bp(app: &AppState, channel_id: &str) -> Option<i64> {
    match app.config.channels.iter().find(|c| c.id == channel_id) {
        Some(c) => Some(i64::from(c.fee_rate_bp)),
        // The embedded sandbox channel charges the simulator's default rate.
        None if channel_id == app.default_channel => Some(60),
        None => None,
    }
}

/// Repairs the findings the channel can settle alone: a payment the channel has as paid
/// while paygate does not (lost notification), a refund whose outcome paygate never heard.
/// Each is queried at the channel and applied through the state machine; the finding is
/// then closed as AUTO_RESOLVED with what was done. Returns how many.
async fn auto_resolve(app: &AppState, records: &[DiscrepancyRecord]) -> usize {
    let mut done = 0;
    for d in records
        .iter()
        .filter(|d| d.class == Class::StatusMismatch.as_str())
        .take(AUTO_RESOLVE_MAX)
    {
        let before = d
            .platform_json
            .as_deref()
            .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok());
        let before_state = before
            .as_ref()
            .and_then(|v| v["stored_state"].as_str().map(str::to_string))
            .unwrap_or_default();
        let outcome = match d.kind.as_str() {
            "P" => repair_payment(app, d).await,
            _ => repair_refund(app, d).await,
        };
        let after = match outcome {
            Ok(Some(after)) => after,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(discrepancy = %d.id, error = %e.message, "reconciliation repair failed; left open");
                continue;
            }
        };
        let resolve = ResolveDiscrepancy {
            id: d.id.clone(),
            expected_state: DISCREPANCY_OPEN.into(),
            new_state: DISCREPANCY_AUTO_RESOLVED.into(),
            resolution: "QUERY_AND_APPLY".into(),
            actor: REPAIR_SOURCE.into(),
            reason: format!("queried the channel: {before_state} -> {after}"),
            at: OffsetDateTime::now_utc(),
        };
        match app.store.resolve_recon_discrepancy(&resolve).await {
            Ok(true) => done += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(discrepancy = %d.id, error = %e, "marking a repaired finding failed")
            }
        }
    }
    done
}

/// Queries the attempt; if the channel says paid and paygate does not, applies it: the order
/// becomes paid, or, when another attempt paid it already, this payment is refunded whole.
/// What was done, or `None` when there was nothing safe to do.
async fn repair_payment(app: &AppState, d: &DiscrepancyRecord) -> Result<Option<String>, ApiError> {
    let Some((order, attempt)) = app.store.find_attempt(&d.out_no).await.map_err(store_err)? else {
        return Ok(None);
    };
    if attempt.state == AttemptState::Paid {
        return Ok(None);
    }
    let merchant = app
        .store
        .get_merchant(&order.mchid)
        .await
        .map_err(store_err)?
        .ok_or_else(|| fail("merchant is gone"))?;
    let sub = crate::flow::sub_at(app, &merchant, &attempt.channel_id)?;
    let channel = app.channel(&attempt.channel_id)?;
    let Some(tx) = channel
        .query(&attempt.attempt_id, &sub)
        .await
        .map_err(|e| crate::flow::channel_error_to_api(&e))?
    else {
        return Ok(None);
    };
    match crate::flow::apply_channel_transaction(app, &attempt.attempt_id, &tx, REPAIR_SOURCE)
        .await?
    {
        crate::flow::Applied::Paid | crate::flow::Applied::PaidAfterClose => {
            Ok(Some(OrderState::Success.as_str().to_string()))
        }
        crate::flow::Applied::DuplicateRefunded => {
            Ok(Some("DUPLICATE_PAYMENT_REFUNDED".to_string()))
        }
        _ => Ok(None),
    }
}

/// Queries the refund and applies the channel's answer; the new refund state if it moved.
async fn repair_refund(app: &AppState, d: &DiscrepancyRecord) -> Result<Option<String>, ApiError> {
    let Some(before) = app
        .store
        .get_refund_by_id(&d.out_no)
        .await
        .map_err(store_err)?
    else {
        return Ok(None);
    };
    if before.state.is_final() {
        return Ok(None);
    }
    crate::refunds::settle_by_query(app, &before).await?;
    let after = app
        .store
        .get_refund_by_id(&d.out_no)
        .await
        .map_err(store_err)?
        .ok_or_else(|| fail("refund is gone"))?;
    Ok((after.state != before.state).then(|| after.state.as_str().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    fn record(kind: Kind, state: State) -> Record {
        Record {
            key: Key::new(kind, b"x"),
            amount_fen: 300,
            fee_milli_fen: FEE_UNKNOWN,
            source: u64::MAX,
            time_s: 0,
            state,
        }
    }

    #[test]
    fn a_refund_or_payment_of_the_day_before_is_a_day_cut_item() {
        let next = date!(2026 - 11 - 29);
        // 23:59:58 Beijing on the 28th; the 29th's run.
        let before = datetime!(2026-11-28 15:59:58 UTC);
        for (kind, state) in [
            (Kind::Payment, State::Paid),
            (Kind::Refund, State::RefundSuccess),
            (Kind::Refund, State::RefundProcessing),
            (Kind::Refund, State::RefundCreated),
        ] {
            assert!(
                booked_on_another_day(&record(kind, state), before, next),
                "{state:?}"
            );
        }
        // On the day itself: an ordinary two-sided finding.
        let same = datetime!(2026-11-29 01:00:00 +08:00);
        assert!(!booked_on_another_day(
            &record(Kind::Refund, State::RefundSuccess),
            same,
            next
        ));
        // Never held on its own day (absent from a bill is normal there): not a pool item.
        for (kind, state) in [
            (Kind::Payment, State::Unpaid),
            (Kind::Payment, State::Closed),
            (Kind::Refund, State::RefundFailed),
        ] {
            assert!(
                !booked_on_another_day(&record(kind, state), before, next),
                "{state:?}"
            );
        }
    }
}
