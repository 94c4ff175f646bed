//! The replay check's nonce inserts on PostgreSQL, batched.
//!
//! Every merchant call on PostgreSQL remembers its nonce in the table every node shares: one
//! INSERT and its commit per call was ~10 % of a query's CPU in the gateway (session 6: 1.52× →
//! 1.31–1.40× with the statement taken out). Calls that arrive while earlier batches are in
//! flight queue here and share the next statement, the same shape as the SQLite writer's group
//! commit. The statement runs in a task of its own, so a caller that goes away (its request
//! cancelled) cannot strand the others of its batch.
//!
//! Semantics are `remember_nonce`'s: true exactly once per (mchid, nonce) while it lasts,
//! across every node. Within a batch the first ask of a key is the one that can win; across
//! batches and nodes the primary key decides. Keys go in sorted, so two batches that share
//! keys lock them in the same order and never deadlock.
//!
//! The inserts commit with `synchronous_commit = off`, on connections beside the store's pool
//! (`UNSYNCED_MAX` of them, shared with `Store::update_attempt_unsynced`): the commit does not
//! wait for PostgreSQL's WAL flush, which put every call's answer behind a disk sync (four A/B
//! pairs at 350 queries a second on 2 vCPUs: the gateway's added p99 ≤ 20/7.5/10/20 ms before,
//! ≤ 20/5/7.5/7.5 after). What that gives up: a nonce committed in the last moments before
//! PostgreSQL itself crashes (its WAL writer flushes within three `wal_writer_delay`s, 600 ms
//! by default) may be forgotten, so a captured request could be replayed once, within its
//! ±5 min timestamp window, right after such a crash. Every mutating call is idempotent, so
//! such a replay repeats an answer. Besides the nonces, only an attempt's fresh credential is
//! written this way (see `update_attempt_unsynced`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::pg_err;
use crate::StoreError;

type Result<T> = std::result::Result<T, StoreError>;

/// Nonces one statement carries at most.
const BATCH_MAX: usize = 256;
/// Statements in flight at once: a slow one does not hold up every call behind it, and while
/// all are busy the next batch grows.
const IN_FLIGHT_MAX: usize = 4;
/// Asks waiting at most; a full queue makes callers wait (backpressure).
const QUEUE_MAX: usize = 4096;
/// Connections of the unsynced pool: the batches' `IN_FLIGHT_MAX` and as many again for the
/// store's other unsynced writes (`Store::update_attempt_unsynced`), which then never wait
/// behind a nonce batch.
pub(crate) const UNSYNCED_MAX: usize = IN_FLIGHT_MAX * 2;

struct Ask {
    mchid: String,
    nonce: String,
    expires_at: i64,
    now: i64,
    reply: oneshot::Sender<Result<bool>>,
}

pub(crate) struct NonceBatcher {
    pool: PgPool,
    /// The batching task's queue: started on first use, in the caller's runtime, and again
    /// should that runtime have gone (its task with it).
    queue: Mutex<Option<mpsc::Sender<Ask>>>,
}

impl NonceBatcher {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            queue: Mutex::new(None),
        }
    }

    /// True the first time `(mchid, nonce)` is seen until `expires_at` (unix ms).
    pub async fn remember(
        &self,
        mchid: &str,
        nonce: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool> {
        let (reply, answer) = oneshot::channel();
        let ask = Ask {
            mchid: mchid.to_string(),
            nonce: nonce.to_string(),
            expires_at,
            now,
            reply,
        };
        self.queue()?.send(ask).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    fn queue(&self) -> Result<mpsc::Sender<Ask>> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = queue.as_ref().filter(|tx| !tx.is_closed()) {
            return Ok(tx.clone());
        }
        // sqlx needs a tokio runtime too: without one nothing here could run.
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| StoreError::Database(format!("no tokio runtime: {e}")))?;
        let (tx, rx) = mpsc::channel(QUEUE_MAX);
        runtime.spawn(batch_loop(self.pool.clone(), rx));
        *queue = Some(tx.clone());
        Ok(tx)
    }
}

/// The unsynced connections, which the nonce inserts share with the store's other unsynced
/// writes: opened when first needed, their commits not waiting for the WAL flush (see the
/// module doc).
pub(crate) fn pool(connect: PgConnectOptions, options: &super::PgOptions) -> PgPool {
    PgPoolOptions::new()
        .max_connections(u32::try_from(UNSYNCED_MAX).unwrap_or(8))
        .test_before_acquire(false)
        .acquire_timeout(std::time::Duration::from_millis(options.acquire_timeout_ms))
        .connect_lazy_with(connect.options([("synchronous_commit", "off")]))
}

fn stopped() -> StoreError {
    StoreError::Database("the nonce batching task has stopped".into())
}

async fn batch_loop(pool: PgPool, mut queue: mpsc::Receiver<Ask>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT_MAX));
    loop {
        // While every slot is busy, the asks pile up into the next batch.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let mut batch = Vec::new();
        if queue.recv_many(&mut batch, BATCH_MAX).await == 0 {
            return;
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match insert(&pool, &batch).await {
                Ok(fresh) => {
                    for (ask, fresh) in batch.into_iter().zip(fresh) {
                        let _ = ask.reply.send(Ok(fresh));
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    for ask in batch {
                        let _ = ask.reply.send(Err(StoreError::Database(message.clone())));
                    }
                }
            }
        });
    }
}

/// One statement for the batch; for each ask, whether its nonce was new (or expired).
async fn insert(pool: &PgPool, batch: &[Ask]) -> Result<Vec<bool>> {
    let mut keys: Vec<(&str, &str, i64)> = Vec::with_capacity(batch.len());
    let mut seen = HashSet::with_capacity(batch.len());
    let first: Vec<bool> = batch
        .iter()
        .map(|a| {
            let new = seen.insert((a.mchid.as_str(), a.nonce.as_str()));
            if new {
                keys.push((&a.mchid, &a.nonce, a.expires_at));
            }
            new
        })
        .collect();
    keys.sort_unstable();
    let (mchids, nonces, expiries): (Vec<&str>, Vec<&str>, Vec<i64>) =
        keys.into_iter()
            .fold(Default::default(), |mut cols, (m, n, e)| {
                cols.0.push(m);
                cols.1.push(n);
                cols.2.push(e);
                cols
            });
    // The earliest clock of the batch decides what has expired: never more than each ask's own.
    let now = batch.iter().map(|a| a.now).min().unwrap_or(i64::MIN);
    let won: Vec<(String, String)> = sqlx::query_as(
        "INSERT INTO request_nonces (mchid, nonce, expires_at)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[])
         ON CONFLICT (mchid, nonce) DO UPDATE SET expires_at = excluded.expires_at
         WHERE request_nonces.expires_at <= $4
         RETURNING mchid, nonce",
    )
    .bind(&mchids)
    .bind(&nonces)
    .bind(&expiries)
    .bind(now)
    .fetch_all(pool)
    .await
    .map_err(pg_err)?;
    let won: HashSet<(&str, &str)> = won.iter().map(|(m, n)| (m.as_str(), n.as_str())).collect();
    Ok(batch
        .iter()
        .zip(first)
        .map(|(a, first)| first && won.contains(&(a.mchid.as_str(), a.nonce.as_str())))
        .collect())
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    /// With `PAYGATE_TEST_DATABASE_URL` only (PostgreSQL).
    #[tokio::test]
    async fn nonce_commits_do_not_wait_for_the_wal_flush_and_the_store_s_do() {
        let Ok(url) = std::env::var("PAYGATE_TEST_DATABASE_URL") else {
            eprintln!("skipped: PAYGATE_TEST_DATABASE_URL is not set");
            return;
        };
        let connect = PgConnectOptions::from_str(&url).expect("url");
        let setting = |pool: PgPool| async move {
            sqlx::query_scalar::<_, String>("SHOW synchronous_commit")
                .fetch_one(&pool)
                .await
                .expect("SHOW")
        };
        let nonces = pool(connect.clone(), &super::super::PgOptions::default());
        assert_eq!(setting(nonces).await, "off");
        let store = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(connect);
        assert_eq!(setting(store).await, "on");
    }
}
