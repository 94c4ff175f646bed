//! `paygate settle run|report`: daily settlement on the store directly (like `paygate audit
//! verify`), so an operator can settle or inspect a day with no gateway running. The store
//! settles each (merchant, day) once, so running this next to a gateway's daily job is safe.

use clap::Subcommand;
use paygate_core::timefmt::parse_date;
use paygate_server::settlement;
use paygate_store::settlement::SETTLEMENTS_PAGE_MAX;

#[derive(Subcommand)]
pub enum SettleCommand {
    /// Settle a Beijing business day (every merchant, or one): pending → available.
    Run {
        /// The business day, YYYY-MM-DD (Beijing).
        #[arg(long)]
        date: String,
        #[arg(long)]
        mchid: Option<String>,
        #[command(flatten)]
        store: crate::StoreArgs,
    },
    /// The day's settlements per merchant, with totals.
    Report {
        #[arg(long)]
        date: String,
        #[arg(long)]
        mchid: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: crate::StoreArgs,
    },
}

fn date_of(s: &str) -> Result<time::Date, String> {
    parse_date(s).ok_or_else(|| format!("--date {s:?}: want YYYY-MM-DD"))
}

pub async fn run(command: SettleCommand) -> Result<(), String> {
    match command {
        SettleCommand::Run { date, mchid, store } => {
            let date = date_of(&date)?;
            let store = paygate_server::key_rotation::open_store(&store.config()?)
                .await
                .map_err(|e| format!("cannot open the store: {e}"))?;
            let outcome = settlement::run_date(store.as_ref(), date, mchid.as_deref()).await;
            store.close().await;
            let rows = outcome.map_err(|e| format!("settlement failed: {e}"))?;
            print_rows(&rows);
            Ok(())
        }
        SettleCommand::Report {
            date,
            mchid,
            json,
            store,
        } => {
            let date = paygate_core::timefmt::format_date(date_of(&date)?);
            let store = paygate_server::key_rotation::open_store(&store.config()?)
                .await
                .map_err(|e| format!("cannot open the store: {e}"))?;
            let outcome = store
                .settlements(mchid.as_deref(), Some(&date), SETTLEMENTS_PAGE_MAX)
                .await;
            store.close().await;
            let rows = outcome.map_err(|e| format!("cannot read settlements: {e}"))?;
            if json {
                let text = serde_json::to_string_pretty(&settlement::report(&rows))
                    .map_err(|e| e.to_string())?;
                println!("{text}");
            } else {
                print_rows(&rows);
            }
            Ok(())
        }
    }
}

fn print_rows(rows: &[paygate_store::settlement::SettlementRecord]) {
    println!(
        "{:<12} {:<32} {:<8} {:>14} {:>8} {:>8} {:>12}",
        "date", "mchid", "status", "amount_fen", "payments", "refunds", "fee_fen"
    );
    for r in rows {
        println!(
            "{:<12} {:<32} {:<8} {:>14} {:>8} {:>8} {:>12}",
            r.business_date, r.mchid, r.status, r.amount_fen, r.payments, r.refunds, r.fee_fen
        );
    }
    let total: i64 = rows.iter().map(|r| r.amount_fen).sum();
    println!("{} settlement(s), {} fen settled", rows.len(), total);
}
