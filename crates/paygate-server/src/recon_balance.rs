//! The end-of-day balance of a reconciliation run (issue 9 §4): the day's totals on
//! paygate's side against the channel's trade bill (scope `CHANNEL`, the channel clearing
//! view), per merchant (`MERCHANT:<mchid>`, channel rows attributed through the key paygate
//! booked them under), and the bill against the channel's fund flow (`FUND_FLOW`: income =
//! payments, expense = refunds + fees). Totals come from the orders and refunds the run read;
//! the ledger's totals (scopes `LEDGER:*`) are `recon_ledger`'s, and these stay as a cross-check.

use std::collections::{BTreeMap, HashMap};

use paygate_recon::{Key, Kind, Record, Scanned, State};
use paygate_store::recon::{ReconBalanceRecord, ReconPlatformRow};
use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Sums {
    pub payments: u64,
    pub payment_fen: i64,
    pub refunds: u64,
    pub refund_fen: i64,
}

impl Sums {
    fn add(&mut self, r: &Record) {
        match r.kind() {
            Kind::Payment if r.state == State::Paid => {
                self.payments += 1;
                self.payment_fen += r.amount_fen;
            }
            Kind::Refund if !matches!(r.state, State::RefundFailed | State::RefundCreated) => {
                self.refunds += 1;
                self.refund_fen += r.amount_fen;
            }
            _ => {}
        }
    }
}

fn record(
    bill_date: &str,
    channel_id: &str,
    scope: String,
    platform: &Sums,
    channel: &Sums,
    at: OffsetDateTime,
) -> ReconBalanceRecord {
    let balanced = platform == channel;
    let detail = if balanced {
        "balanced".to_string()
    } else {
        format!(
            "payments {} fen vs {} fen, refunds {} fen vs {} fen (paygate vs channel)",
            platform.payment_fen, channel.payment_fen, platform.refund_fen, channel.refund_fen
        )
    };
    ReconBalanceRecord {
        bill_date: bill_date.to_string(),
        channel_id: channel_id.to_string(),
        scope,
        platform_json: json!(platform).to_string(),
        channel_json: json!(channel).to_string(),
        balanced,
        detail,
        at,
    }
}

/// The balances of one run.
pub fn balances(
    bill_date: &str,
    channel_id: &str,
    channel: &Scanned,
    platform: &Scanned,
    rows: &[ReconPlatformRow],
    fund_flow: Option<&paygate_wxpay::bill::FundFlowSummary>,
    at: OffsetDateTime,
) -> Vec<ReconBalanceRecord> {
    let mut mchid_of: HashMap<Key, &str> = HashMap::with_capacity(rows.len());
    let (mut platform_all, mut channel_all) = (Sums::default(), Sums::default());
    let mut per: BTreeMap<&str, (Sums, Sums)> = BTreeMap::new();
    for r in platform.runs.iter().flatten() {
        platform_all.add(r);
        if let Some(row) = rows.get(r.source as usize) {
            mchid_of.insert(r.key, row.mchid.as_str());
            per.entry(row.mchid.as_str()).or_default().0.add(r);
        }
    }
    for r in channel.runs.iter().flatten() {
        channel_all.add(r);
        let mchid = mchid_of.get(&r.key).copied().unwrap_or("?");
        per.entry(mchid).or_default().1.add(r);
    }
    let mut out = vec![record(
        bill_date,
        channel_id,
        "CHANNEL".into(),
        &platform_all,
        &channel_all,
        at,
    )];
    for (mchid, (p, c)) in &per {
        out.push(record(
            bill_date,
            channel_id,
            format!("MERCHANT:{mchid}"),
            p,
            c,
            at,
        ));
    }
    if let Some(flow) = fund_flow {
        let t = &channel.totals;
        let fee_fen = i64::try_from(t.fee_milli_fen / 1000).unwrap_or(i64::MAX);
        let bill = json!({
            "income_fen": i64::try_from(t.payment_fen).unwrap_or(i64::MAX),
            "expense_fen": i64::try_from(t.refund_paid_fen).unwrap_or(i64::MAX).saturating_add(fee_fen),
        });
        let flow_json = json!({"income_fen": flow.income_fen, "expense_fen": flow.expense_fen});
        let balanced = bill == flow_json;
        out.push(ReconBalanceRecord {
            bill_date: bill_date.to_string(),
            channel_id: channel_id.to_string(),
            scope: "FUND_FLOW".into(),
            platform_json: bill.to_string(),
            channel_json: flow_json.to_string(),
            balanced,
            detail: if balanced {
                "trade bill agrees with the fund flow".into()
            } else {
                format!("trade bill {bill} vs fund flow {flow_json}")
            },
            at,
        });
    }
    out
}
