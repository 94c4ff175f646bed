//! Reconciliation's admin API and its daily job (issue 9 §1, §3, §4):
//!
//! - `POST /admin/v1/recon/runs {"bill_date", "channel_id"?}`: reconcile a day now (every
//!   channel unless one is named); answers each run's report.
//! - `GET /admin/v1/recon/report?bill_date=`: the day's runs, balances and findings by state.
//! - `GET /admin/v1/recon/discrepancies?bill_date=&state=&limit=`: the operator queue.
//! - `GET /admin/v1/recon/discrepancies/{id}`: one finding with its evidence and audit.
//! - `POST /admin/v1/recon/discrepancies/{id}/resolve {"reason"}`: closes an OPEN finding
//!   (compare-and-set; the audit row is written with it, and the admin call itself goes to
//!   the operator audit trail like every admin write).
//!
//! The daily job (`[recon] enabled`) reconciles yesterday on every channel once the Beijing
//! clock passes `run_after`, unless a run of that day and channel is stored already.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::routing::{get, post};
use paygate_core::error::{ApiError, ErrorCode, decode_json};
use paygate_core::timefmt::{BEIJING, format_date, parse_date};
use paygate_http::V3Path as Path;
use paygate_store::recon::{DISCREPANCY_OPEN, DISCREPANCY_RESOLVED, ResolveDiscrepancy};
use paygate_wxpay::models::bills::parse_query;
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;

use crate::http::{ApiFail, ApiResult, AppState, internal, ok_json};

/// Longest operator reason kept.
const REASON_CHARS_MAX: usize = 256;
const LIST_LIMIT_MAX: u32 = 1_000;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/v1/recon/runs", post(run))
        .route("/admin/v1/recon/report", get(report))
        .route("/admin/v1/recon/discrepancies", get(list))
        .route("/admin/v1/recon/discrepancies/{id}", get(one))
        .route("/admin/v1/recon/discrepancies/{id}/resolve", post(resolve))
}

fn date_param(s: &str) -> Result<time::Date, ApiFail> {
    parse_date(s).ok_or_else(|| ApiFail(ApiError::param("/bill_date", "must be YYYY-MM-DD")))
}

#[derive(Deserialize)]
struct RunRequest {
    bill_date: String,
    #[serde(default)]
    channel_id: Option<String>,
}

async fn run(State(app): State<Arc<AppState>>, body: Bytes) -> ApiResult {
    let req: RunRequest = decode_json(&body)?;
    let date = date_param(&req.bill_date)?;
    let channels: Vec<String> = match req.channel_id {
        Some(id) => {
            if !app.channels.contains_key(&id) {
                return Err(ApiError::new(
                    ErrorCode::ResourceNotExists,
                    format!("no channel {id}"),
                )
                .with_status(404)
                .into());
            }
            vec![id]
        }
        None => app.channels.keys().cloned().collect(),
    };
    let mut reports = Vec::new();
    for id in channels {
        reports.push(crate::recon::run_day(&app, date, &id).await?);
    }
    ok_json(&json!({ "runs": reports }))
}

#[derive(Deserialize)]
struct ReportQuery {
    bill_date: String,
}

async fn report(State(app): State<Arc<AppState>>, RawQuery(q): RawQuery) -> ApiResult {
    let q: ReportQuery = parse_query(&q.unwrap_or_default())?;
    let date = format_date(date_param(&q.bill_date)?);
    let runs = app.store.recon_runs(&date).await.map_err(internal)?;
    let balances = app.store.recon_balances(&date).await.map_err(internal)?;
    let found = app
        .store
        .recon_discrepancies(Some(&date), None, LIST_LIMIT_MAX)
        .await
        .map_err(internal)?;
    let mut by_state = std::collections::BTreeMap::<String, u64>::new();
    let mut by_class = std::collections::BTreeMap::<String, u64>::new();
    for d in &found {
        *by_state.entry(d.state.clone()).or_default() += 1;
        *by_class.entry(d.class.clone()).or_default() += 1;
    }
    let runs: Vec<_> = runs
        .iter()
        .map(|r| {
            json!({
                "run_id": r.run_id, "channel_id": r.channel_id, "status": r.status,
                "bill_rows": r.bill_rows, "platform_rows": r.platform_rows, "matched": r.matched,
                "discrepancies": r.discrepancies, "trade_bill_sha1": r.trade_bill_sha1,
                "fundflow_bill_sha1": r.fundflow_bill_sha1,
                "summary": serde_json::from_str::<serde_json::Value>(&r.summary_json).unwrap_or_default(),
                "finished_at": paygate_core::timefmt::rfc3339_beijing(r.finished_at),
            })
        })
        .collect();
    let balances: Vec<_> = balances
        .iter()
        .map(|b| {
            json!({
                "channel_id": b.channel_id, "scope": b.scope, "balanced": b.balanced, "detail": b.detail,
                "paygate": serde_json::from_str::<serde_json::Value>(&b.platform_json).unwrap_or_default(),
                "channel": serde_json::from_str::<serde_json::Value>(&b.channel_json).unwrap_or_default(),
            })
        })
        .collect();
    ok_json(&json!({
        "bill_date": date,
        "runs": runs,
        "balances": balances,
        "discrepancies": {"by_state": by_state, "by_class": by_class},
    }))
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    bill_date: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

fn view(d: &paygate_store::recon::DiscrepancyRecord) -> serde_json::Value {
    let parse = |s: &Option<String>| {
        s.as_deref()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
    };
    json!({
        "id": d.id, "bill_date": d.bill_date, "channel_id": d.channel_id, "class": d.class,
        "kind": if d.kind == "R" { "REFUND" } else { "PAYMENT" }, "out_no": d.out_no, "seq": d.seq,
        "mchid": d.mchid, "transaction_id": d.transaction_id,
        "channel": parse(&d.channel_json), "paygate": parse(&d.platform_json),
        "state": d.state, "resolution": d.resolution, "resolved_by": d.resolved_by, "reason": d.reason,
        "created_at": paygate_core::timefmt::rfc3339_beijing(d.created_at),
        "resolved_at": d.resolved_at.map(paygate_core::timefmt::rfc3339_beijing),
    })
}

async fn list(State(app): State<Arc<AppState>>, RawQuery(q): RawQuery) -> ApiResult {
    let q: ListQuery = parse_query(&q.unwrap_or_default())?;
    let date = q
        .bill_date
        .as_deref()
        .map(date_param)
        .transpose()?
        .map(format_date);
    if let Some(s) = &q.state {
        if !["OPEN", "AUTO_RESOLVED", "RESOLVED"].contains(&s.as_str()) {
            return Err(ApiError::param_in(
                "query",
                "/state",
                "must be OPEN, AUTO_RESOLVED or RESOLVED",
            )
            .into());
        }
    }
    let limit = q.limit.unwrap_or(100).clamp(1, LIST_LIMIT_MAX);
    let found = app
        .store
        .recon_discrepancies(date.as_deref(), q.state.as_deref(), limit)
        .await
        .map_err(internal)?;
    ok_json(&json!({ "data": found.iter().map(view).collect::<Vec<_>>() }))
}

fn not_found(id: &str) -> ApiFail {
    ApiFail(
        ApiError::new(ErrorCode::ResourceNotExists, format!("no discrepancy {id}"))
            .with_status(404),
    )
}

async fn one(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> ApiResult {
    let d = app
        .store
        .get_recon_discrepancy(&id)
        .await
        .map_err(internal)?
        .ok_or_else(|| not_found(&id))?;
    let audit = app.store.recon_audit(&id).await.map_err(internal)?;
    let mut v = view(&d);
    v["audit"] = audit
        .iter()
        .map(|a| {
            json!({"actor": a.actor, "action": a.action, "before": a.before_state, "after": a.after_state,
                   "reason": a.reason, "at": paygate_core::timefmt::rfc3339_beijing(a.at)})
        })
        .collect();
    ok_json(&v)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveRequest {
    reason: String,
    #[serde(default)]
    operator: Option<String>,
}

async fn resolve(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let req: ResolveRequest = decode_json(&body)?;
    let reason = req.reason.trim();
    if reason.is_empty() || reason.chars().count() > REASON_CHARS_MAX {
        return Err(ApiError::param(
            "/reason",
            format!("a reason of 1 to {REASON_CHARS_MAX} characters is required"),
        )
        .into());
    }
    let d = app
        .store
        .get_recon_discrepancy(&id)
        .await
        .map_err(internal)?
        .ok_or_else(|| not_found(&id))?;
    if d.state != DISCREPANCY_OPEN {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("discrepancy {id} is {} already", d.state),
        )
        .into());
    }
    let change = ResolveDiscrepancy {
        id: id.clone(),
        expected_state: DISCREPANCY_OPEN.into(),
        new_state: DISCREPANCY_RESOLVED.into(),
        resolution: "OPERATOR".into(),
        actor: req.operator.unwrap_or_else(|| "operator".into()),
        reason: reason.to_string(),
        at: OffsetDateTime::now_utc(),
    };
    if !app
        .store
        .resolve_recon_discrepancy(&change)
        .await
        .map_err(internal)?
    {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("discrepancy {id} was resolved meanwhile"),
        )
        .into());
    }
    one(State(app), Path(id)).await
}

/// Starts the daily job when `[recon] enabled`.
pub fn spawn_daily(app: Arc<AppState>) {
    if !app.config.recon.enabled {
        return;
    }
    tokio::spawn(async move {
        let every = app.scaled(Duration::from_secs(
            app.config.recon.check_interval_s.max(1),
        ));
        loop {
            if let Err(e) = daily_once(&app).await {
                tracing::warn!(error = %e.message, "daily reconciliation round failed");
            }
            tokio::time::sleep(every).await;
        }
    });
}

/// Yesterday (Beijing) on every channel without a stored run, once past `run_after`.
async fn daily_once(app: &AppState) -> Result<(), ApiError> {
    let now = OffsetDateTime::now_utc().to_offset(BEIJING);
    let due = format!("{:02}:{:02}", now.hour(), now.minute()) >= app.config.recon.run_after;
    let Some(yesterday) = now.date().previous_day() else {
        return Ok(());
    };
    if !due {
        return Ok(());
    }
    let date = format_date(yesterday);
    let done = app
        .store
        .recon_runs(&date)
        .await
        .map_err(|e| ApiError::new(ErrorCode::SystemError, e.to_string()))?;
    for id in app.channels.keys() {
        if done.iter().any(|r| &r.channel_id == id) {
            continue;
        }
        let report = crate::recon::run_day(app, yesterday, id).await?;
        tracing::info!(channel = %id, date = %date, matched = report.matched, open = report.open, "daily reconciliation done");
    }
    Ok(())
}
