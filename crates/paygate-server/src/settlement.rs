//! Daily settlement (issue 4 §5): a merchant's pending balance moves to available T+N days
//! after the Beijing business day, unless the merchant is under a risk hold.
//!
//! - The daily job (`[settlement] enabled`, default on) settles day D once D + N days has
//!   passed `run_after` (Beijing), N = `delay_days` (default 1) or the merchant's entry in
//!   `merchant_delay_days`; it catches up `catch_up_days` missed days, oldest first, and
//!   re-runs HELD days of released merchants before anything newer.
//! - The store settles one (merchant, day) per transaction, idempotently
//!   (`SettlementStore::settle_day`; the amount rule is in `paygate_store::settlement`).
//! - Admin: `GET /admin/v1/settlements?mchid=&date=` (per-merchant daily report),
//!   `POST /admin/v1/settlements/run {"date", "mchid"?}` (an operator's run of a day that has
//!   begun, whatever N says), `POST /admin/v1/merchants/{mchid}/settlement-hold {"reason"?}`
//!   and `.../settlement-release`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::routing::{get, post};
use paygate_core::error::{ApiError, ErrorCode, decode_json};
use paygate_core::timefmt::{BEIJING, format_date, parse_date, rfc3339_beijing};
use paygate_http::V3Path as Path;
use paygate_store::settlement::{SETTLEMENTS_PAGE_MAX, SettleDay, SettlementRecord};
use paygate_store::{Store, StoreError};
use paygate_wxpay::models::bills::parse_query;
use serde::Deserialize;
use serde_json::{Value, json};
use time::{Date, OffsetDateTime, Time};

use crate::bills::day_bounds;
use crate::http::{ApiFail, ApiResult, AppState, internal, ok_json};

/// Longest hold reason kept.
const REASON_CHARS_MAX: usize = 256;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SettlementConfig {
    /// Run the daily job.
    pub enabled: bool,
    /// T+N: days after the business day before it settles.
    pub delay_days: u32,
    /// Per-merchant T+N overrides (`mchid = days`).
    pub merchant_delay_days: BTreeMap<String, u32>,
    /// Beijing `HH:MM` after which a due day settles.
    pub run_after: String,
    /// Missed days (before the newest due one) the job also settles.
    pub catch_up_days: u32,
    /// How often a node checks for due days, in seconds.
    pub check_interval_s: u64,
}

impl Default for SettlementConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            delay_days: 1,
            merchant_delay_days: BTreeMap::new(),
            run_after: "02:00".into(),
            catch_up_days: 7,
            check_interval_s: 300,
        }
    }
}

impl SettlementConfig {
    pub fn delay_for(&self, mchid: &str) -> u32 {
        self.merchant_delay_days
            .get(mchid)
            .copied()
            .unwrap_or(self.delay_days)
    }

    /// `run_after` as a time of day.
    pub fn run_after_time(&self) -> Result<Time, String> {
        let bad = || format!("[settlement] run_after {:?}: want HH:MM", self.run_after);
        let (h, m) = self.run_after.split_once(':').ok_or_else(bad)?;
        if h.len() != 2 || m.len() != 2 {
            return Err(bad());
        }
        let (h, m) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        Time::from_hms(h, m, 0).map_err(|_| bad())
    }
}

/// The business days due by `now` for T+`delay`, oldest first: the newest is today − delay
/// once `run_after` has passed (else the day before), and `catch_up_days` before it.
pub fn days_due(now: OffsetDateTime, run_after: Time, delay: u32, catch_up_days: u32) -> Vec<Date> {
    let local = now.to_offset(BEIJING);
    let mut newest = local
        .date()
        .checked_sub(time::Duration::days(i64::from(delay)));
    if local.time() < run_after {
        newest = newest.and_then(Date::previous_day);
    }
    let mut days = Vec::new();
    let mut day = newest;
    for _ in 0..=catch_up_days {
        let Some(d) = day else { break };
        days.push(d);
        day = d.previous_day();
    }
    days.reverse();
    days
}

/// Settles `mchid`'s day `date` now (idempotent; see the store).
pub async fn settle_merchant_day(
    store: &dyn Store,
    mchid: &str,
    date: Date,
) -> Result<SettlementRecord, StoreError> {
    let (from, to) = day_bounds(date);
    store
        .settle_day(&SettleDay {
            mchid: mchid.to_string(),
            business_date: format_date(date),
            from,
            to,
            at: OffsetDateTime::now_utc(),
        })
        .await
}

/// HELD days of released merchants (all, or `only`'s), oldest first, up to `until` if given.
async fn rerun_released(
    store: &dyn Store,
    only: Option<&str>,
    until: Option<Date>,
) -> Result<Vec<SettlementRecord>, StoreError> {
    let mut out = Vec::new();
    for h in store
        .released_held_settlements(SETTLEMENTS_PAGE_MAX)
        .await?
    {
        if only.is_some_and(|m| m != h.mchid) {
            continue;
        }
        let Some(date) = parse_date(&h.business_date) else {
            continue;
        };
        if until.is_some_and(|u| date > u) {
            continue;
        }
        out.push(settle_merchant_day(store, &h.mchid, date).await?);
    }
    Ok(out)
}

/// Settles `date` for one merchant or every merchant with a pending account; released HELD
/// days up to `date` go first, so each day keeps its own money.
pub async fn run_date(
    store: &dyn Store,
    date: Date,
    mchid: Option<&str>,
) -> Result<Vec<SettlementRecord>, StoreError> {
    let mut out = rerun_released(store, mchid, Some(date)).await?;
    let merchants = match mchid {
        Some(m) => vec![m.to_string()],
        None => store.settlement_merchants().await?,
    };
    for m in merchants {
        out.push(settle_merchant_day(store, &m, date).await?);
    }
    Ok(out)
}

/// One round of the daily job at `now`: released HELD days, then every merchant's due days
/// without a final row. Returns the rows written or re-read.
pub async fn run_due(
    store: &dyn Store,
    config: &SettlementConfig,
    now: OffsetDateTime,
) -> Result<Vec<SettlementRecord>, StoreError> {
    let run_after = config.run_after_time().map_err(StoreError::Database)?;
    let mut out = rerun_released(store, None, None).await?;
    let mut done: BTreeMap<String, Vec<SettlementRecord>> = BTreeMap::new();
    for m in store.settlement_merchants().await? {
        for date in days_due(now, run_after, config.delay_for(&m), config.catch_up_days) {
            let key = format_date(date);
            if !done.contains_key(&key) {
                let rows = store
                    .settlements(None, Some(&key), SETTLEMENTS_PAGE_MAX)
                    .await?;
                done.insert(key.clone(), rows);
            }
            // Final rows (and HELD ones of still-held merchants) need no write command.
            if done
                .get(&key)
                .is_some_and(|rows| rows.iter().any(|r| r.mchid == m))
            {
                continue;
            }
            out.push(settle_merchant_day(store, &m, date).await?);
        }
    }
    Ok(out)
}

/// Starts the daily job on this node (every node may run it: the store settles once).
pub fn spawn_daily(app: Arc<AppState>) {
    if !app.config.settlement.enabled {
        return;
    }
    if let Err(e) = app.config.settlement.run_after_time() {
        tracing::error!(error = %e, "settlement job not started");
        return;
    }
    tokio::spawn(async move {
        let every = Duration::from_secs(app.config.settlement.check_interval_s.max(1));
        loop {
            match run_due(
                app.store.as_ref(),
                &app.config.settlement,
                OffsetDateTime::now_utc(),
            )
            .await
            {
                Ok(rows) => {
                    for r in rows {
                        tracing::info!(mchid = %r.mchid, date = %r.business_date, status = %r.status, amount_fen = r.amount_fen, "settlement");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "settlement round failed"),
            }
            tokio::time::sleep(every).await;
        }
    });
}

/// A settlement row as the admin API and `paygate settle report` show it.
pub fn view(r: &SettlementRecord) -> Value {
    json!({
        "mchid": r.mchid, "business_date": r.business_date, "settlement_id": r.settlement_id,
        "status": r.status, "amount_fen": r.amount_fen, "payments": r.payments,
        "refunds": r.refunds, "fee_fen": r.fee_fen, "transfer_id": r.transfer_id,
        "created_at": rfc3339_beijing(r.created_at), "updated_at": rfc3339_beijing(r.updated_at),
    })
}

/// The report of `rows`: each row and the totals.
pub fn report(rows: &[SettlementRecord]) -> Value {
    let sum = |f: fn(&SettlementRecord) -> i64| rows.iter().map(f).sum::<i64>();
    json!({
        "settlements": rows.iter().map(view).collect::<Vec<_>>(),
        "total": {
            "count": rows.len(),
            "settled": rows.iter().filter(|r| r.status == paygate_store::settlement::SETTLED).count(),
            "held": rows.iter().filter(|r| r.status == paygate_store::settlement::HELD).count(),
            "amount_fen": sum(|r| r.amount_fen),
            "payments": sum(|r| r.payments),
            "refunds": sum(|r| r.refunds),
            "fee_fen": sum(|r| r.fee_fen),
        },
    })
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/v1/settlements", get(list))
        .route("/admin/v1/settlements/run", post(run))
        .route("/admin/v1/merchants/{mchid}/settlement-hold", post(hold))
        .route(
            "/admin/v1/merchants/{mchid}/settlement-release",
            post(release),
        )
}

fn date_param(field: &str, s: &str) -> Result<Date, ApiFail> {
    parse_date(s).ok_or_else(|| ApiFail(ApiError::param(field, "must be YYYY-MM-DD")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    mchid: Option<String>,
    #[serde(default)]
    date: Option<String>,
}

async fn list(State(app): State<Arc<AppState>>, RawQuery(q): RawQuery) -> ApiResult {
    let q: ListQuery = parse_query(&q.unwrap_or_default())?;
    let date = match q.date.as_deref().filter(|d| !d.is_empty()) {
        Some(d) => Some(format_date(date_param("/date", d)?)),
        None => None,
    };
    let mchid = q.mchid.filter(|m| !m.is_empty());
    let rows = app
        .store
        .settlements(mchid.as_deref(), date.as_deref(), SETTLEMENTS_PAGE_MAX)
        .await
        .map_err(internal)?;
    let holds = app.store.settlement_holds().await.map_err(internal)?;
    let mut body = report(&rows);
    body["holds"] = holds
        .iter()
        .filter(|h| mchid.as_deref().is_none_or(|m| m == h.mchid))
        .map(|h| json!({"mchid": h.mchid, "reason": h.reason, "held_at": rfc3339_beijing(h.held_at)}))
        .collect();
    ok_json(&body)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    date: String,
    #[serde(default)]
    mchid: Option<String>,
}

async fn run(State(app): State<Arc<AppState>>, body: Bytes) -> ApiResult {
    let req: RunRequest = decode_json(&body)?;
    let date = date_param("/date", &req.date)?;
    // A day not begun has nothing to settle and would cut into the future.
    if date > OffsetDateTime::now_utc().to_offset(BEIJING).date() {
        return Err(ApiFail(ApiError::param(
            "/date",
            "must not be in the future",
        )));
    }
    if let Some(m) = &req.mchid {
        known_merchant(&app, m).await?;
    }
    let rows = run_date(app.store.as_ref(), date, req.mchid.as_deref())
        .await
        .map_err(internal)?;
    ok_json(&report(&rows))
}

async fn known_merchant(app: &AppState, mchid: &str) -> Result<(), ApiFail> {
    match app.store.get_merchant(mchid).await.map_err(internal)? {
        Some(_) => Ok(()),
        None => Err(ApiFail(
            ApiError::new(ErrorCode::ResourceNotExists, "商户不存在").with_status(404),
        )),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HoldRequest {
    #[serde(default)]
    reason: Option<String>,
}

async fn hold(
    State(app): State<Arc<AppState>>,
    Path(mchid): Path<String>,
    body: Bytes,
) -> ApiResult {
    let req: HoldRequest = if body.is_empty() {
        HoldRequest::default()
    } else {
        decode_json(&body)?
    };
    let reason = req.reason.unwrap_or_else(|| "risk hold".into());
    if reason.chars().count() > REASON_CHARS_MAX {
        return Err(ApiFail(ApiError::param(
            "/reason",
            format!("at most {REASON_CHARS_MAX} characters"),
        )));
    }
    known_merchant(&app, &mchid).await?;
    let newly = app
        .store
        .hold_settlement(&mchid, &reason, OffsetDateTime::now_utc())
        .await
        .map_err(internal)?;
    ok_json(&json!({"mchid": mchid, "held": true, "newly_held": newly}))
}

async fn release(State(app): State<Arc<AppState>>, Path(mchid): Path<String>) -> ApiResult {
    known_merchant(&app, &mchid).await?;
    let released = app
        .store
        .release_settlement(&mchid)
        .await
        .map_err(internal)?;
    ok_json(&json!({"mchid": mchid, "held": false, "released": released}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> OffsetDateTime {
        OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
    }

    #[test]
    fn due_days_follow_t_plus_n_and_run_after() {
        let two = Time::from_hms(2, 0, 0).unwrap();
        // 2026-11-29 03:00 Beijing: T+1 settles the 28th, with one catch-up day the 27th too.
        let now = at("2026-11-29T03:00:00+08:00");
        let d = |s: &str| parse_date(s).unwrap();
        assert_eq!(
            days_due(now, two, 1, 1),
            vec![d("2026-11-27"), d("2026-11-28")]
        );
        // T+3: the 26th.
        assert_eq!(days_due(now, two, 3, 0), vec![d("2026-11-26")]);
        // Before run_after: one day less.
        let early = at("2026-11-29T01:59:00+08:00");
        assert_eq!(days_due(early, two, 1, 0), vec![d("2026-11-27")]);
        // The Beijing date counts, not UTC's (18:30 UTC on the 28th is the 29th in Beijing).
        assert_eq!(
            days_due(at("2026-11-28T18:30:00Z"), two, 1, 0),
            vec![d("2026-11-28")]
        );
    }

    #[test]
    fn config_checks() {
        let mut c = SettlementConfig::default();
        assert_eq!(c.delay_for("m"), 1);
        c.merchant_delay_days.insert("m".into(), 3);
        assert_eq!(c.delay_for("m"), 3);
        assert!(c.run_after_time().is_ok());
        c.run_after = "2:00".into();
        assert!(c.run_after_time().is_err());
        // As an operator writes it in paygate.toml.
        let c: crate::config::Config = toml::from_str(
            "[settlement]\ndelay_days = 2\nrun_after = \"03:30\"\n\
             [settlement.merchant_delay_days]\n\"1900000109\" = 5\n",
        )
        .unwrap();
        assert_eq!(c.settlement.delay_for("1900000109"), 5);
        assert_eq!(c.settlement.delay_for("other"), 2);
        assert!(toml::from_str::<crate::config::Config>("[settlement]\ndelay = 2").is_err());
    }
}
