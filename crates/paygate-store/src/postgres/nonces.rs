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

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use sqlx::PgPool;
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
