//! Write throughput of the store: `create_order` and `apply_order_change` (with an attempt CAS
//! and an outbox row, as a paid callback writes), one at a time and with many in flight (what
//! group commit is for). SQLite always; PostgreSQL too when `PAYGATE_TEST_DATABASE_URL` is set.
//!
//! `cargo bench -p paygate-store` — each iteration is `OPS_PER_ITER` operations, so criterion's
//! "thrpt" line reads as operations per second.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use paygate_store::*;
use time::OffsetDateTime;

const OPS_PER_ITER: u64 = 512;
/// Concurrent callers in the "in flight" cases (a busy gateway's request handlers).
const IN_FLIGHT: u64 = 64;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn now() -> OffsetDateTime {
    truncate_to_ms(OffsetDateTime::now_utc())
}

fn order(transaction_id: &str) -> (OrderRecord, AttemptRecord) {
    let at = now();
    let o = OrderRecord {
        transaction_id: transaction_id.into(),
        mchid: "1900000109".into(),
        out_trade_no: format!("out-{transaction_id}"),
        appid: "wxd678efh567hg6787".into(),
        trade_type: "JSAPI".into(),
        state: OrderState::Notpay,
        description: "Image形象店-深圳腾大-QQ公仔".into(),
        attach: None,
        notify_url: "https://merchant.example/notify".into(),
        total_fen: 100,
        currency: "CNY".into(),
        payer_openid: Some("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into()),
        time_expire: at + Duration::from_secs(7_200),
        fingerprint: "0123456789abcdef0123456789abcdef".into(),
        request_json: "{\"amount\":{\"total\":100,\"currency\":\"CNY\"},\"description\":\"x\"}"
            .into(),
        created_at: at,
        updated_at: at,
        success_time: None,
        bank_type: None,
        version: 0,
        pricing: Default::default(),
        profit_sharing: false,
    };
    let a = AttemptRecord {
        attempt_id: format!("{transaction_id}-1"),
        transaction_id: transaction_id.into(),
        seq: 1,
        channel_id: "wx-main".into(),
        state: AttemptState::Prepaid,
        prepay_id: Some("wx201410272009395522657a690389285100".into()),
        code_url: None,
        h5_url: None,
        prepay_expires_at: Some(at + Duration::from_secs(7_200)),
        channel_transaction_id: None,
        error_code: None,
        error_message: None,
        decision: Some("only channel".into()),
        created_at: at,
        updated_at: at,
        last_polled_at: None,
        next_poll_at: None,
    };
    (o, a)
}

fn paid(transaction_id: &str) -> OrderChange {
    let at = now();
    let mut attempt = AttemptChange::to(
        &format!("{transaction_id}-1"),
        &[AttemptState::Prepaid],
        AttemptState::Paid,
        at,
    );
    attempt.channel_transaction_id = Some("4200000001202601010000000001".into());
    OrderChange {
        transaction_id: transaction_id.into(),
        expected_state: OrderState::Notpay,
        new_state: OrderState::Success,
        success_time: Some(at),
        bank_type: Some("OTHERS".into()),
        payer_openid: None,
        updated_at: at,
        attempt: Some(attempt),
        notification: Some(NotificationRecord {
            id: format!("n-{transaction_id}"),
            mchid: "1900000109".into(),
            transaction_id: transaction_id.into(),
            event_type: "TRANSACTION.SUCCESS".into(),
            url: "https://merchant.example/notify".into(),
            plaintext: "{\"trade_state\":\"SUCCESS\"}".repeat(16),
            state: NotificationState::Pending,
            attempts: 0,
            next_attempt_at: at,
            lease_until: None,
            created_at: at,
            delivered_at: None,
            answer_serial: None,
        }),
        repair: None,
        ledger: None,
    }
}

fn fresh_ids(n: u64) -> Vec<String> {
    (0..n)
        .map(|_| format!("tx{:020}", NEXT_ID.fetch_add(1, Ordering::Relaxed)))
        .collect()
}

/// Runs `op` over `ids` with `in_flight` callers at a time; returns the wall time.
async fn drive<F, Fut>(store: &Arc<dyn Store>, ids: Vec<String>, in_flight: u64, op: F) -> Duration
where
    F: Fn(Arc<dyn Store>, String) -> Fut + Send + Sync + Copy + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let chunk = ids.len().div_ceil(in_flight as usize).max(1);
    let start = Instant::now();
    let tasks: Vec<_> = ids
        .chunks(chunk)
        .map(|c| {
            let (store, c) = (Arc::clone(store), c.to_vec());
            tokio::spawn(async move {
                for id in c {
                    op(Arc::clone(&store), id).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

async fn create(store: Arc<dyn Store>, id: String) {
    let (o, a) = order(&id);
    assert_eq!(
        store.create_order(&o, &a).await.unwrap(),
        CreateOrder::Created
    );
}

async fn pay(store: Arc<dyn Store>, id: String) {
    assert!(store.apply_order_change(&paid(&id)).await.unwrap());
}

fn bench_backend(
    c: &mut Criterion,
    name: &str,
    rt: &tokio::runtime::Runtime,
    store: &Arc<dyn Store>,
) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(OPS_PER_ITER));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    for in_flight in [1, IN_FLIGHT] {
        group.bench_function(format!("create_order/{in_flight}_in_flight"), |b| {
            b.to_async(rt).iter_custom(|iters| {
                let store = Arc::clone(store);
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += drive(&store, fresh_ids(OPS_PER_ITER), in_flight, create).await;
                    }
                    total
                }
            })
        });
        group.bench_function(format!("apply_order_change/{in_flight}_in_flight"), |b| {
            b.to_async(rt).iter_custom(|iters| {
                let store = Arc::clone(store);
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let ids = fresh_ids(OPS_PER_ITER);
                        // Orders to pay, made outside the timed part.
                        drive(&store, ids.clone(), IN_FLIGHT, create).await;
                        total += drive(&store, ids, in_flight, pay).await;
                    }
                    total
                }
            })
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!(
        "paygate-store-bench-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let sqlite = rt
        .block_on(open(&format!("sqlite://{}/paygate.db", dir.display())))
        .unwrap();
    bench_backend(c, "sqlite_full", &rt, &sqlite);
    drop(sqlite);
    let _ = std::fs::remove_dir_all(&dir);

    if let Some(url) = std::env::var("PAYGATE_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
        let pg = rt.block_on(open_postgres_in_schema(&url, &schema)).unwrap();
        bench_backend(c, "postgres", &rt, &pg);
        drop(pg);
        rt.block_on(drop_postgres_schema(&url, &schema)).unwrap();
    }
}

criterion_group!(store, benches);
criterion_main!(store);
