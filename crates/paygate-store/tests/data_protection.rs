//! Data protection in the store (issue 7), on SQLite and on PostgreSQL when
//! `PAYGATE_TEST_DATABASE_URL` is set: sealed fields never reach the database in plaintext
//! yet every record reads back whole; rotation and re-sealing; retirement; the shared nonce
//! table; the chained audit trail naming an edited entry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::*;
use paygate_store::vault::{LocalMasterKey, MasterKey, NewAuditEntry};
use paygate_store::*;

const OPENID: &str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";
const CARD: &str = "6222021234567890128";
const ID_NUMBER: &str = "11010519491231002X";

fn master(hex: &str) -> Arc<dyn MasterKey> {
    Arc::new(LocalMasterKey::from_hex(hex).unwrap())
}

async fn sealed_store(db: &Db) -> Arc<dyn Store> {
    let s = db.open().await;
    s.attach_vault(master("00112233445566778899aabbccddeeff"))
        .await
        .unwrap();
    s
}

/// Every text value of the tables that hold sealed data, as the database has them.
async fn raw_text(db: &Db) -> String {
    let queries = [
        "SELECT payer_openid || ' ' || request_json || ' ' || attach || ' ' || fingerprint FROM orders",
        "SELECT plaintext FROM notifications",
        "SELECT sealed || ' ' || token FROM openid_vault",
    ];
    let mut all = String::new();
    match db {
        Db::Sqlite { file, .. } => {
            let conn = rusqlite::Connection::open(file).unwrap();
            for q in queries {
                let mut stmt = conn.prepare(q).unwrap();
                let rows = stmt
                    .query_map([], |r| r.get::<_, Option<String>>(0))
                    .unwrap();
                for r in rows {
                    all.push_str(&r.unwrap().unwrap_or_default());
                    all.push('\n');
                }
            }
        }
        Db::Postgres { base_url, schema } => {
            use sqlx::{Connection, Row};
            let mut conn = pg_connection(base_url, schema).await;
            for q in queries {
                for r in sqlx::query(q).fetch_all(&mut conn).await.unwrap() {
                    all.push_str(&r.get::<Option<String>, _>(0).unwrap_or_default());
                    all.push('\n');
                }
            }
            conn.close().await.unwrap();
        }
    }
    all
}

/// One statement on the database behind the store's back.
async fn raw_execute(db: &Db, sql: &str) {
    match db {
        Db::Sqlite { file, .. } => {
            let conn = rusqlite::Connection::open(file).unwrap();
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .unwrap();
            conn.execute(sql, []).unwrap();
        }
        Db::Postgres { base_url, schema } => {
            use sqlx::Connection;
            let mut conn = pg_connection(base_url, schema).await;
            sqlx::query(sql).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
    }
}

fn sensitive_order(n: u32) -> (OrderRecord, AttemptRecord) {
    let tx = format!("42000000012026010100000{n:05}");
    let mut o = order(&tx, &format!("out-{n}"));
    o.payer_openid = Some(OPENID.into());
    o.attach = Some(format!("card {CARD}"));
    o.fingerprint = format!("JSAPI:{{\"openid\":\"{OPENID}\"}}");
    o.request_json =
        format!(r#"{{"payer":{{"openid":"{OPENID}"}},"attach":"card {CARD} id {ID_NUMBER}"}}"#);
    let a = attempt(&format!("ATT{n:05}"), &tx, 1);
    (o, a)
}

async fn sealed_fields_read_back_whole_and_are_not_in_the_database(db: Db) {
    let s = sealed_store(&db).await;
    let (o, a) = sensitive_order(1);
    assert_eq!(s.create_order(&o, &a).await.unwrap(), CreateOrder::Created);
    let mut n = notification("N1", &o.transaction_id, 0);
    n.plaintext = format!(r#"{{"payer":{{"openid":"{OPENID}"}}}}"#);
    let mut c = change(&o.transaction_id, OrderState::Notpay, OrderState::Success);
    c.payer_openid = Some(OPENID.into());
    c.notification = Some(n.clone());
    assert!(s.apply_order_change(&c).await.unwrap());

    let read = s.get_order("1900000109", "out-1").await.unwrap().unwrap();
    assert_eq!(read.payer_openid.as_deref(), Some(OPENID));
    assert_eq!(read.request_json, o.request_json);
    assert_eq!(read.attach, o.attach);
    let by_id = s
        .get_order_by_transaction_id(&o.transaction_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_id, read);
    assert_eq!(s.find_attempt("ATT00001").await.unwrap().unwrap().0, read);
    assert_eq!(
        s.get_notification("N1").await.unwrap().unwrap().plaintext,
        n.plaintext
    );
    // The idempotent answer is opened too.
    match s.create_order(&o, &a).await.unwrap() {
        CreateOrder::Exists(existing) => assert_eq!(existing, read),
        other => panic!("{other:?}"),
    }
    // A second store on the same database, same master key (a restarted node): still whole.
    let again = sealed_store(&db).await;
    let fresh = again
        .get_order("1900000109", "out-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fresh.payer_openid.as_deref(), Some(OPENID));
    // The query API's view: the same order, openid and attach opened (this store's openid
    // cache is cold: read from the vault), the request snapshot and fingerprint left empty.
    let mut shown = read.clone();
    shown.request_json.clear();
    shown.fingerprint.clear();
    for key in [
        OrderKey::OutTradeNo {
            mchid: "1900000109",
            out_trade_no: "out-1",
        },
        OrderKey::TransactionId(&o.transaction_id),
    ] {
        assert_eq!(
            again.get_order_view(key).await.unwrap(),
            Some(shown.clone())
        );
        assert_eq!(s.get_order_view(key).await.unwrap(), Some(shown.clone()));
    }
    let missing = OrderKey::OutTradeNo {
        mchid: "1900000109",
        out_trade_no: "out-none",
    };
    assert_eq!(s.get_order_view(missing).await.unwrap(), None);
    // Without a vault a view blanks the same two fields, so it looks the same either way.
    let plain = db.open().await;
    let (mut p, pa) = sensitive_order(9);
    p.payer_openid = None;
    plain.create_order(&p, &pa).await.unwrap();
    let plain_view = plain
        .get_order_view(OrderKey::TransactionId(&p.transaction_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            plain_view.request_json.as_str(),
            plain_view.fingerprint.as_str()
        ),
        ("", "")
    );
    assert_eq!(plain_view.attach, p.attach);

    let raw = raw_text(&db).await;
    for secret in [OPENID, CARD, ID_NUMBER] {
        assert!(!raw.contains(secret), "{secret} in plaintext:\n{raw}");
    }
    assert!(raw.contains("pgv1.") && raw.contains("ov_"), "{raw}");
}

async fn a_wrong_master_key_is_refused_and_a_keyless_store_does_not_guess(db: Db) {
    let s = sealed_store(&db).await;
    let (o, a) = sensitive_order(2);
    s.create_order(&o, &a).await.unwrap();
    let other = db.open().await;
    assert!(
        other
            .attach_vault(master("ffeeddccbbaa99887766554433221100"))
            .await
            .is_err()
    );
    let keyless = db.open().await;
    assert!(matches!(
        keyless.get_order("1900000109", "out-2").await,
        Err(StoreError::Corrupt(_))
    ));
    // A view does not open the request either, but still refuses a sealed order unopened.
    assert!(matches!(
        keyless
            .get_order_view(OrderKey::OutTradeNo {
                mchid: "1900000109",
                out_trade_no: "out-2",
            })
            .await,
        Err(StoreError::Corrupt(_))
    ));
}

async fn plaintext_rows_are_sealed_by_the_background_reseal_and_rotation_moves_them(db: Db) {
    // Written before encryption was on.
    let plain = db.open().await;
    let (o, a) = sensitive_order(3);
    plain.create_order(&o, &a).await.unwrap();
    seed_notification(plain.as_ref(), &{
        let mut n = notification("N3", "4200000001202601019999999999", 0);
        n.plaintext = format!(r#"{{"openid":"{OPENID}"}}"#);
        n
    })
    .await;
    assert!(raw_text(&db).await.contains(OPENID));

    let s = sealed_store(&db).await;
    assert!(s.vault_status().await.unwrap().plaintext_values >= 3);
    while s.reseal_batch().await.unwrap().more {}
    let status = s.vault_status().await.unwrap();
    assert_eq!(status.plaintext_values, 0, "{status:?}");
    assert!(!raw_text(&db).await.contains(OPENID));
    let read = s.get_order("1900000109", "out-3").await.unwrap().unwrap();
    assert_eq!(read.payer_openid.as_deref(), Some(OPENID));
    assert_eq!(read.request_json, o.request_json);

    // Rotation: the new key seals only after its activation delay; the old one cannot be
    // retired while it seals anything.
    let old = status
        .keys
        .iter()
        .find(|k| k.active)
        .unwrap()
        .key_id
        .clone();
    let new = s.rotate_data_key().await.unwrap();
    assert!(new.activate_at > new.created_at);
    assert!(matches!(
        s.retire_data_key(&old).await,
        Err(StoreError::Conflict(_))
    ));
    let status = s.vault_status().await.unwrap();
    assert_eq!(
        status.keys.iter().filter(|k| k.purpose == "DATA").count(),
        2
    );
    assert!(
        status
            .keys
            .iter()
            .any(|k| k.key_id == old && k.sealed_values >= 3)
    );
}

/// Every data key as if stored an hour earlier: the active one has long settled.
async fn backdate_keys(db: &Db) {
    raw_execute(
        db,
        "UPDATE vault_keys SET created_at = created_at - 3600000, activate_at = activate_at - 3600000",
    )
    .await;
}

async fn reseal_pass(s: &Arc<dyn Store>) -> vault::ResealReport {
    let mut total = vault::ResealReport::default();
    loop {
        let r = s.reseal_batch().await.unwrap();
        total.resealed += r.resealed;
        total.examined += r.examined;
        if !r.more {
            return total;
        }
    }
}

async fn a_finished_reseal_pass_stops_scanning_until_a_new_key_activates(db: Db) {
    let s = sealed_store(&db).await;
    for n in 10..14 {
        let (o, a) = sensitive_order(n);
        s.create_order(&o, &a).await.unwrap();
    }
    backdate_keys(&db).await;
    // A restarted node: one pass over every sealed column finds nothing stale.
    let s = sealed_store(&db).await;
    let first = reseal_pass(&s).await;
    // Four orders, each seen once per orders column (3 sealed + the openid) and its openid
    // in the vault.
    assert_eq!((first.resealed, first.examined), (0, 4 * 4 + 1));
    // Settled and finished: later batches read nothing at all.
    assert_eq!(
        s.reseal_batch().await.unwrap(),
        vault::ResealReport::default()
    );
    // Written after the pass: sealed under the active key already, nothing to find.
    let (o, a) = sensitive_order(14);
    s.create_order(&o, &a).await.unwrap();
    assert_eq!(
        s.reseal_batch().await.unwrap(),
        vault::ResealReport::default()
    );

    // A rotated key, active and settled: a new pass moves every value onto it.
    let old = s
        .vault_status()
        .await
        .unwrap()
        .keys
        .into_iter()
        .find(|k| k.active)
        .unwrap()
        .key_id;
    s.rotate_data_key().await.unwrap();
    backdate_keys(&db).await;
    let s = sealed_store(&db).await;
    let moved = reseal_pass(&s).await;
    // 5 orders × (request, fingerprint, attach) + 1 openid in the vault.
    assert_eq!((moved.resealed, moved.examined), (5 * 3 + 1, 5 * 4 + 1));
    assert_eq!(
        s.reseal_batch().await.unwrap(),
        vault::ResealReport::default()
    );
    let status = s.vault_status().await.unwrap();
    let old = status.keys.iter().find(|k| k.key_id == old).unwrap();
    assert_eq!(old.sealed_values, 0, "{status:?}");
    s.retire_data_key(&old.key_id).await.unwrap();
    let read = s.get_order("1900000109", "out-12").await.unwrap().unwrap();
    assert_eq!(read.payer_openid.as_deref(), Some(OPENID));
}

async fn nonces_are_refused_while_live_on_every_store_of_the_database(db: Db) {
    let (a, b) = (db.open().await, db.open().await);
    let now = t(1_000_000);
    let until = t(1_300_000);
    let connections = a.pool_stats().connections;
    assert!(
        a.remember_nonce("1900000109", "n1", until, now)
            .await
            .unwrap()
    );
    if a.backend() == "postgres" {
        // The nonce inserts' own connection, opened by the first one, counts in the pool metric.
        assert!(a.pool_stats().connections > connections);
    }
    assert!(
        !b.remember_nonce("1900000109", "n1", until, now)
            .await
            .unwrap()
    );
    assert!(
        b.remember_nonce("1900000110", "n1", until, now)
            .await
            .unwrap()
    );
    // Expired: accepted again; purge removes what expired.
    assert!(
        b.remember_nonce("1900000109", "n1", t(1_700_000), t(1_400_000))
            .await
            .unwrap()
    );
    assert_eq!(a.purge_nonces(t(1_350_000)).await.unwrap(), 1);
    // 50 concurrent uses of one nonce: exactly one wins.
    let wins = futures_count(&a, &b, now, until).await;
    assert_eq!(wins, 1);
}

async fn futures_count(
    a: &Arc<dyn Store>,
    b: &Arc<dyn Store>,
    now: time::OffsetDateTime,
    until: time::OffsetDateTime,
) -> usize {
    let mut tasks = Vec::new();
    for i in 0..50 {
        let s = if i % 2 == 0 {
            Arc::clone(a)
        } else {
            Arc::clone(b)
        };
        tasks.push(tokio::spawn(async move {
            s.remember_nonce("1900000111", "race", until, now)
                .await
                .unwrap()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    wins
}

/// Many calls at once (on PostgreSQL they share batched statements): every distinct nonce
/// wins exactly once, whichever store and batch its copies land in, and a batch that mixes
/// new, repeated and other merchants' nonces answers each call on its own.
async fn a_burst_of_nonces_wins_each_once(db: Db) {
    let (a, b) = (db.open().await, db.open().await);
    let now = t(2_000_000);
    let until = t(2_300_000);
    let mut tasks = Vec::new();
    for i in 0..400usize {
        let s = if i % 3 == 0 {
            Arc::clone(&b)
        } else {
            Arc::clone(&a)
        };
        // 100 nonces, each asked 4 times; two merchants share the names of the first 10.
        let (mchid, nonce) = match i % 100 {
            k if k < 10 && i >= 200 => ("1900000113".to_string(), format!("burst-{k}")),
            k => ("1900000112".to_string(), format!("burst-{k}")),
        };
        tasks.push(tokio::spawn(async move {
            let won = s.remember_nonce(&mchid, &nonce, until, now).await.unwrap();
            (mchid, nonce, won)
        }));
    }
    let mut wins = std::collections::HashMap::new();
    for t in tasks {
        let (mchid, nonce, won) = t.await.unwrap();
        *wins.entry((mchid, nonce)).or_insert(0) += usize::from(won);
    }
    assert_eq!(
        wins.len(),
        110,
        "100 nonces of one merchant, 10 of the other"
    );
    assert!(wins.values().all(|&w| w == 1), "{wins:?}");
}

async fn the_audit_trail_chains_and_names_an_edited_entry(db: Db) {
    let s = sealed_store(&db).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            s.append_audit(&NewAuditEntry {
                at: time::OffsetDateTime::now_utc(),
                actor: "operator".into(),
                action: "merchant.disable".into(),
                target: format!("19000001{i:02}"),
                detail: "{}".into(),
            })
            .await
            .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let entries = s.audit_entries(0, 100).await.unwrap();
    assert_eq!(
        entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=20).collect::<Vec<_>>()
    );
    let verdict = s.verify_audit().await.unwrap();
    assert_eq!((verdict.entries, verdict.broken), (20, None));

    raw_execute(
        &db,
        "UPDATE operator_audit SET target = 'someone-else' WHERE seq = 7",
    )
    .await;
    let verdict = s.verify_audit().await.unwrap();
    assert_eq!(verdict.entries, 6);
    assert_eq!(verdict.broken.unwrap().seq, 7);
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::run(super::Db::sqlite(), super::$name).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    match super::Db::postgres() {
                        Some(db) => super::run(db, super::$name).await,
                        None => super::skipped(stringify!($name)),
                    }
                }
            )*
        }
    };
}

both!(
    sealed_fields_read_back_whole_and_are_not_in_the_database,
    a_wrong_master_key_is_refused_and_a_keyless_store_does_not_guess,
    plaintext_rows_are_sealed_by_the_background_reseal_and_rotation_moves_them,
    a_finished_reseal_pass_stops_scanning_until_a_new_key_activates,
    nonces_are_refused_while_live_on_every_store_of_the_database,
    a_burst_of_nonces_wins_each_once,
    the_audit_trail_chains_and_names_an_edited_entry,
);
