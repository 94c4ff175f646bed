//! The ledger's side of the end-of-day balance (issue 9 §4): what the business day moved
//! through the channel's clearing account (payments in: the net, net-frozen and fee legs and
//! duplicate payments; refunds out: `RefundPaid` and `DuplicateRefunded`), in total and per merchant, against the channel's trade bill.
//! The total is held against the bill's summary (Σ 应结订单金额, Σ 退款金额, which the scan
//! checked against the summary row); a merchant's share against the bill rows paygate can
//! attribute to it (rows of keys it booked that day). The channel's fee is shown, not compared:
//! it is the channel's cost, which the ledger does not book (its fee legs are paygate's income).
//! The order/refund totals in `recon_balance` stay as a second, independent cross-check.

use std::collections::{BTreeMap, HashMap};

use paygate_ledger::chart::TransferCode;
use paygate_recon::{Key, Kind, Scanned, State};
use paygate_store::ledger_day::LedgerDayRow;
use paygate_store::recon::{ReconBalanceRecord, ReconPlatformRow};
use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;

/// A merchant's (or the channel's) clearing movements of the day, from the ledger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LedgerSums {
    /// Net legs (one per payment whose net is not zero).
    pub payments: i64,
    /// Into clearing: net + fee = what the payers paid.
    pub payment_fen: i64,
    pub net_fen: i64,
    pub fee_fen: i64,
    /// Duplicate payments (a second attempt of a paid order), owed back to their payers.
    pub duplicate_fen: i64,
    pub refunds: i64,
    /// Out of clearing: refunds paid back.
    pub refund_fen: i64,
}

impl LedgerSums {
    fn add(&mut self, r: &LedgerDayRow) {
        match TransferCode::from_code(r.code) {
            Some(TransferCode::PaymentNet | TransferCode::PaymentNetFrozen) => {
                self.payments += r.count;
                self.net_fen += r.amount_fen;
                self.payment_fen += r.amount_fen;
            }
            Some(TransferCode::PaymentFee) => {
                self.fee_fen += r.amount_fen;
                self.payment_fen += r.amount_fen;
            }
            // A duplicate payment came into clearing like any payment and leaves with its
            // refund: both are rows of the channel's bill.
            Some(TransferCode::DuplicatePayment) => {
                self.payments += r.count;
                self.payment_fen += r.amount_fen;
                self.duplicate_fen += r.amount_fen;
            }
            Some(TransferCode::RefundPaid | TransferCode::DuplicateRefunded) => {
                self.refunds += r.count;
                self.refund_fen += r.amount_fen;
            }
            _ => {}
        }
    }
}

/// The channel's figures a ledger total is held against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BillSums {
    pub payment_fen: i64,
    pub refund_fen: i64,
    /// Channel level only: the bill's fee (the channel's cost; shown, not compared).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fee_fen: Option<i64>,
}

fn fen(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

fn record(
    bill_date: &str,
    channel_id: &str,
    scope: String,
    ledger: &LedgerSums,
    bill: &BillSums,
    at: OffsetDateTime,
) -> ReconBalanceRecord {
    let balanced = ledger.payment_fen == bill.payment_fen && ledger.refund_fen == bill.refund_fen;
    let detail = if balanced {
        "ledger agrees with the bill".to_string()
    } else {
        format!(
            "payments in {} fen vs {} fen, refunds out {} fen vs {} fen (ledger vs bill)",
            ledger.payment_fen, bill.payment_fen, ledger.refund_fen, bill.refund_fen
        )
    };
    ReconBalanceRecord {
        bill_date: bill_date.to_string(),
        channel_id: channel_id.to_string(),
        scope,
        platform_json: json!(ledger).to_string(),
        channel_json: json!(bill).to_string(),
        balanced,
        detail,
        at,
    }
}

/// `LEDGER:CHANNEL` and one `LEDGER:MERCHANT:<mchid>` per merchant seen on either side
/// (`?` for movements or bill rows no merchant could be found for).
pub fn balances(
    bill_date: &str,
    channel_id: &str,
    ledger: &[LedgerDayRow],
    channel: &Scanned,
    platform: &Scanned,
    rows: &[ReconPlatformRow],
    at: OffsetDateTime,
) -> Vec<ReconBalanceRecord> {
    let mut total = LedgerSums::default();
    let mut per: BTreeMap<&str, (LedgerSums, BillSums)> = BTreeMap::new();
    for r in ledger {
        total.add(r);
        let mchid = if r.mchid.is_empty() { "?" } else { &r.mchid };
        per.entry(mchid).or_default().0.add(r);
    }
    let mut mchid_of: HashMap<Key, &str> = HashMap::with_capacity(rows.len());
    for r in platform.runs.iter().flatten() {
        if let Some(row) = rows.get(r.source as usize) {
            mchid_of.insert(r.key, row.mchid.as_str());
        }
    }
    for r in channel.runs.iter().flatten() {
        let (payment, refund) = match (r.kind(), r.state) {
            (Kind::Payment, State::Paid) => (r.amount_fen, 0),
            (Kind::Refund, State::RefundSuccess) => (0, r.amount_fen),
            _ => continue,
        };
        let mchid = mchid_of.get(&r.key).copied().unwrap_or("?");
        let b = &mut per.entry(mchid).or_default().1;
        b.payment_fen += payment;
        b.refund_fen += refund;
    }
    let t = &channel.totals;
    let bill = BillSums {
        payment_fen: fen(t.settlement_fen),
        refund_fen: fen(t.refund_paid_fen),
        fee_fen: Some(fen(t.fee_milli_fen / 1000)),
    };
    let mut out = vec![record(
        bill_date,
        channel_id,
        "LEDGER:CHANNEL".into(),
        &total,
        &bill,
        at,
    )];
    for (mchid, (l, b)) in &per {
        out.push(record(
            bill_date,
            channel_id,
            format!("LEDGER:MERCHANT:{mchid}"),
            l,
            b,
            at,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(code: TransferCode, mchid: &str, count: i64, amount_fen: i64) -> LedgerDayRow {
        LedgerDayRow {
            code: code.code(),
            mchid: mchid.into(),
            count,
            amount_fen,
        }
    }

    #[test]
    fn ledger_legs_sum_to_payments_in_and_refunds_out() {
        let mut s = LedgerSums::default();
        for r in [
            row(TransferCode::PaymentNet, "m1", 2, 990),
            row(TransferCode::PaymentNetFrozen, "m1", 1, 495),
            row(TransferCode::PaymentFee, "m1", 3, 15),
            row(TransferCode::RefundPaid, "m1", 1, 40),
            row(TransferCode::Settle, "m1", 1, 7),
            // A duplicate payment of 200 that went back: in and out, both in the bill.
            row(TransferCode::DuplicatePayment, "m1", 1, 200),
            row(TransferCode::DuplicateRefunded, "m1", 1, 200),
        ] {
            s.add(&r);
        }
        assert_eq!(
            s,
            LedgerSums {
                payments: 4,
                payment_fen: 1_700,
                net_fen: 1_485,
                fee_fen: 15,
                duplicate_fen: 200,
                refunds: 2,
                refund_fen: 240,
            }
        );
        let at = OffsetDateTime::UNIX_EPOCH;
        let even = record(
            "2026-11-29",
            "ch",
            "LEDGER:CHANNEL".into(),
            &s,
            &BillSums {
                payment_fen: 1_700,
                refund_fen: 240,
                fee_fen: Some(9),
            },
            at,
        );
        assert!(even.balanced, "{}", even.detail);
        let off = record(
            "2026-11-29",
            "ch",
            "LEDGER:CHANNEL".into(),
            &s,
            &BillSums {
                payment_fen: 1_701,
                refund_fen: 240,
                fee_fen: None,
            },
            at,
        );
        assert!(!off.balanced);
        assert!(
            off.detail.contains("1700 fen vs 1701 fen"),
            "{}",
            off.detail
        );
    }
}
