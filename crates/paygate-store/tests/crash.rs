//! An acknowledged write survives `kill -9` of the writing process.
//!
//! The test re-runs its own test binary as a child ([`crash_child_process_entry`]) that creates
//! orders from many tasks at once and prints each one the store acknowledged, then records the
//! attempt's credential with `update_attempt_unsynced` (answered before the fsync) and prints
//! that too. The parent kills it with SIGKILL mid-stream (group commits in flight), reopens the
//! database and checks that every acknowledged order is there, with its first attempt, and
//! every acknowledged credential with it: only a power cut may lose an unsynced write.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::*;
use paygate_store::*;

const CHILD_URL_ENV: &str = "PAYGATE_STORE_CRASH_CHILD_URL";
/// Acknowledgements the parent waits for before it kills the child.
const ACKS_BEFORE_KILL: usize = 1_500;
const CHILD_TASKS: usize = 32;

/// The child's side: only does something when the parent started it with the URL to write to.
#[test]
fn crash_child_process_entry() {
    let Ok(url) = std::env::var(CHILD_URL_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = open(&url).await.unwrap();
        let tasks: Vec<_> = (0..CHILD_TASKS)
            .map(|task| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    for i in 0.. {
                        let tx = format!("t{task:02}-{i:06}");
                        let o = order(&tx, &format!("out-{tx}"));
                        store
                            .create_order(&o, &attempt(&format!("{tx}-1"), &tx, 1))
                            .await
                            .unwrap();
                        // Only now, after the commit, is the order acknowledged.
                        let ack = |what: &str| {
                            let mut out = std::io::stdout().lock();
                            writeln!(out, "{what} {tx}").unwrap();
                            out.flush().unwrap();
                        };
                        ack("ACK");
                        let mut prepaid = AttemptChange::to(
                            &format!("{tx}-1"),
                            &[AttemptState::Created],
                            AttemptState::Prepaid,
                            t(10),
                        );
                        prepaid.prepay_id = Some(format!("wx-{tx}"));
                        assert!(store.update_attempt_unsynced(&prepaid).await.unwrap());
                        ack("PREPAID");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
}

fn kill_child_mid_write_and_check(db: Db) {
    let _cleanup = Cleanup(db.clone());
    let url = db.url();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_process_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_URL_ENV, &url)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut acked = Vec::new();
    let mut prepaid = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(tx) = line.strip_prefix("PREPAID ") {
            prepaid.push(tx.to_string());
        }
        if let Some(tx) = line.strip_prefix("ACK ") {
            acked.push(tx.to_string());
            if acked.len() == ACKS_BEFORE_KILL {
                child.kill().unwrap(); // SIGKILL: no destructor, no final commit, no checkpoint
                break;
            }
        }
    }
    child.wait().unwrap();
    assert_eq!(
        acked.len(),
        ACKS_BEFORE_KILL,
        "the child stopped before it was killed"
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = db.open().await;
        for tx in &acked {
            assert!(
                store
                    .get_order_by_transaction_id(tx)
                    .await
                    .unwrap()
                    .is_some(),
                "acknowledged {tx} was lost"
            );
            assert_eq!(
                store.attempts(tx).await.unwrap().len(),
                1,
                "{tx} lost its attempt"
            );
        }
        assert!(
            prepaid.len() > ACKS_BEFORE_KILL / 2,
            "{} credentials",
            prepaid.len()
        );
        for tx in &prepaid {
            let attempt = store.attempts(tx).await.unwrap().remove(0);
            assert_eq!(
                (attempt.state, attempt.prepay_id.as_deref()),
                (AttemptState::Prepaid, Some(format!("wx-{tx}").as_str())),
                "{tx} lost its acknowledged credential"
            );
        }
    });
}

#[test]
fn acknowledged_orders_survive_kill_9_on_sqlite_full() {
    kill_child_mid_write_and_check(Db::sqlite());
}

#[test]
fn acknowledged_orders_survive_kill_9_on_sqlite_normal() {
    kill_child_mid_write_and_check(Db::sqlite_with("synchronous=normal"));
}

#[test]
fn acknowledged_orders_survive_kill_9_on_postgres() {
    match Db::postgres() {
        Some(db) => kill_child_mid_write_and_check(db),
        None => skipped("acknowledged_orders_survive_kill_9_on_postgres"),
    }
}
