//! Bill parsing speed (issue 8 §3): a 100,000-row trade bill streamed through
//! [`TradeBillReader`] (what reconciliation does with a channel's day), and the same bill
//! written by [`TradeBill::to_csv`].
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use paygate_wxpay::bill::{TradeBill, TradeBillReader, TradeBillRow, TradeBillType};

const ROWS: usize = 100_000;

fn bill_rows() -> Vec<TradeBillRow> {
    (0..ROWS)
        .map(|i| TradeBillRow {
            trade_time: format!(
                "2026-11-28 {:02}:{:02}:{:02}",
                i / 3600 % 24,
                i / 60 % 60,
                i % 60
            ),
            appid: "wxd678efh567hg6787".into(),
            mchid: "1900000109".into(),
            sub_mchid: "0".into(),
            transaction_id: format!("42000000002026112800{i:08}"),
            out_trade_no: format!("ORDER{i:010}"),
            openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
            trade_type: "JSAPI".into(),
            trade_state: "SUCCESS".into(),
            bank_type: "OTHERS".into(),
            currency: "CNY".into(),
            settlement_total_fen: 100 + (i as i64 % 10_000),
            refund_id: "0".into(),
            out_refund_no: "0".into(),
            goods_name: "Image形象店-深圳腾大-QQ公仔".into(),
            attach: "".into(),
            fee_milli_fen: 6 * (100 + (i as i64 % 10_000)),
            order_total_fen: 100 + (i as i64 % 10_000),
            ..TradeBillRow::default()
        })
        .collect()
}

fn parse(c: &mut Criterion) {
    let bill = TradeBill::summarize(TradeBillType::All, bill_rows());
    let csv = bill.to_csv();
    let mut group = c.benchmark_group("trade_bill_100k_rows");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(csv.len() as u64));
    group.bench_function("stream_parse", |b| {
        b.iter(|| {
            let reader = TradeBillReader::new(black_box(csv.as_slice())).unwrap();
            let mut total = 0i64;
            for row in reader {
                total += row.unwrap().settlement_total_fen;
            }
            total
        })
    });
    group.bench_function("write", |b| b.iter(|| black_box(&bill).to_csv()));
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
