//! `paygate recon`: end-of-day reconciliation on a running gateway, through its admin API
//! (the gateway holds the channels' credentials and the store):
//!
//! - `paygate recon run --date YYYY-MM-DD [--channel ID]`: reconcile the day now, print the
//!   run's report (counts per class, pool movements, repairs, balance);
//! - `paygate recon report --date YYYY-MM-DD`: print the stored runs, the end-of-day balances
//!   and the findings by state and class.
//!
//! The operator token defaults to `<data dir>/operator_token`, where `serve` writes it.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

#[derive(Subcommand)]
pub enum ReconCommand {
    /// Reconcile one business day (Beijing time) now, on every channel or one.
    Run {
        #[arg(long)]
        date: String,
        #[arg(long)]
        channel: Option<String>,
        #[command(flatten)]
        target: GatewayArgs,
    },
    /// Print a day's reconciliation: runs, end-of-day balances, findings.
    Report {
        #[arg(long)]
        date: String,
        /// Print the raw JSON instead of the summary.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: GatewayArgs,
    },
}

#[derive(Args)]
pub struct GatewayArgs {
    /// The running gateway's base URL.
    #[arg(
        long,
        env = "PAYGATE_GATEWAY_URL",
        default_value = "http://127.0.0.1:8080/"
    )]
    gateway: String,
    /// The admin API's bearer token (default: read from <data dir>/operator_token).
    #[arg(long, env = "PAYGATE_OPERATOR_TOKEN")]
    token: Option<String>,
    #[arg(long, env = "PAYGATE_DATA_DIR", default_value = "./paygate-data")]
    data_dir: PathBuf,
}

impl GatewayArgs {
    fn token(&self) -> Result<String, String> {
        match &self.token {
            Some(t) => Ok(t.clone()),
            None => std::fs::read_to_string(self.data_dir.join("operator_token"))
                .map(|t| t.trim().to_string())
                .map_err(|e| {
                    format!(
                        "no --token and {}/operator_token: {e}",
                        self.data_dir.display()
                    )
                }),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/admin/v1/{path}", self.gateway.trim_end_matches('/'))
    }
}

fn check_date(date: &str) -> Result<(), String> {
    paygate_core::timefmt::parse_date(date)
        .map(|_| ())
        .ok_or_else(|| format!("--date {date}: want YYYY-MM-DD"))
}

async fn answer(resp: reqwest::RequestBuilder) -> Result<Value, String> {
    let resp = resp
        .send()
        .await
        .map_err(|e| format!("gateway unreachable: {e}"))?;
    let status = resp.status();
    let body: Value = resp
        .json()
        .await
        .map_err(|e| format!("unreadable answer: {e}"))?;
    if !status.is_success() {
        return Err(format!("gateway answered {status}: {body}"));
    }
    Ok(body)
}

pub async fn run(command: ReconCommand) -> Result<(), String> {
    let http = reqwest::Client::new();
    match command {
        ReconCommand::Run {
            date,
            channel,
            target,
        } => {
            check_date(&date)?;
            let mut body = json!({"bill_date": date});
            if let Some(c) = channel {
                body["channel_id"] = json!(c);
            }
            let out = answer(
                http.post(target.url("recon/runs"))
                    .bearer_auth(target.token()?)
                    .json(&body),
            )
            .await?;
            for run in out["runs"].as_array().into_iter().flatten() {
                println!(
                    "{} {}: bill {} rows, paygate {} rows, matched {}, auto-resolved {}, open {}, balanced {}",
                    run["bill_date"].as_str().unwrap_or_default(),
                    run["channel_id"].as_str().unwrap_or_default(),
                    run["bill_rows"],
                    run["platform_rows"],
                    run["matched"],
                    run["auto_resolved"],
                    run["open"],
                    run["balanced"]
                );
                println!("  findings {}  pool {}", run["counts"], run["pool"]);
            }
            Ok(())
        }
        ReconCommand::Report { date, json, target } => {
            check_date(&date)?;
            let url = format!("{}?bill_date={date}", target.url("recon/report"));
            let report = answer(http.get(url).bearer_auth(target.token()?)).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
                return Ok(());
            }
            print!("{}", render(&report));
            Ok(())
        }
    }
}

/// The report as text, one line per run and per balance scope.
fn render(report: &Value) -> String {
    let mut out = format!(
        "reconciliation of {}\n",
        report["bill_date"].as_str().unwrap_or_default()
    );
    let runs = report["runs"].as_array().cloned().unwrap_or_default();
    if runs.is_empty() {
        out.push_str("  no run stored for this day\n");
    }
    for r in &runs {
        out.push_str(&format!(
            "  run {} on {}: {}, bill {} rows, paygate {} rows, matched {}, findings {} {}\n",
            r["run_id"].as_str().unwrap_or_default(),
            r["channel_id"].as_str().unwrap_or_default(),
            r["status"].as_str().unwrap_or_default(),
            r["bill_rows"],
            r["platform_rows"],
            r["matched"],
            r["discrepancies"],
            r["summary"]["counts"]
        ));
    }
    out.push_str("end-of-day balance:\n");
    for b in report["balances"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {:<8} {:<24} {:<10} paygate {} channel {}\n",
            b["channel_id"].as_str().unwrap_or_default(),
            b["scope"].as_str().unwrap_or_default(),
            if b["balanced"] == true {
                "BALANCED"
            } else {
                "OFF"
            },
            b["paygate"],
            b["channel"]
        ));
    }
    out.push_str(&format!(
        "findings by state {} by class {}\n",
        report["discrepancies"]["by_state"], report["discrepancies"]["by_class"]
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_runs_balances_and_findings() {
        let report = json!({
            "bill_date": "2026-11-28",
            "runs": [{"run_id": "r1", "channel_id": "sandbox", "status": "DONE", "bill_rows": 4,
                      "platform_rows": 4, "matched": 4, "discrepancies": 0, "summary": {"counts": {}}}],
            "balances": [{"channel_id": "sandbox", "scope": "CHANNEL", "balanced": true,
                          "paygate": {"payment_fen": 100}, "channel": {"payment_fen": 100}},
                         {"channel_id": "sandbox", "scope": "FUND_FLOW", "balanced": false,
                          "paygate": {}, "channel": {}}],
            "discrepancies": {"by_state": {}, "by_class": {}},
        });
        let text = render(&report);
        assert!(text.contains("reconciliation of 2026-11-28"));
        assert!(text.contains("run r1 on sandbox: DONE, bill 4 rows"));
        assert!(text.contains("CHANNEL") && text.contains("BALANCED"));
        assert!(text.contains("FUND_FLOW") && text.contains("OFF"));
        assert!(render(&json!({"bill_date": "2026-11-29"})).contains("no run stored"));
        assert!(check_date("2026-02-30").is_err());
    }
}
