//! The SQLite store's threads: ONE writer that group-commits, and a few readers.
//!
//! Point reads (one order, one merchant: a few tens of microseconds) skip the reader threads:
//! `read_now` runs them on the calling thread with a connection from a small pool, as a
//! signature already runs on it. The hand-off costs two wake-ups (the reader's, then the
//! caller's), which measured 5-7 % of a query's CPU. Scans keep the reader threads, so a long
//! read never holds an async worker.
//!
//! The writer owns the only write connection. It takes the first queued command, drains up to
//! `write_batch_max - 1` more that are already waiting, and runs them all in ONE transaction,
//! each inside its own SAVEPOINT: a command that fails (an error, or a compare-and-set that
//! did not match) rolls back only itself. One COMMIT (one fsync with synchronous=FULL) then
//! acknowledges the whole batch; no command's result is sent before its batch committed, so
//! an acknowledged write is a durable write. Under load the batches grow by themselves: the
//! longer a commit takes, the more commands queue behind it.
//!
//! The one exception is `write_unsynced` (`Store::update_attempt_unsynced`): a batch made only
//! of such commands commits with `synchronous=NORMAL`, so its answer does not wait for an
//! fsync. Its WAL frames are written before the answer (a killed process loses nothing) and
//! become durable with the next synced commit, whose fsync of the WAL covers every frame
//! before it, or at the next checkpoint.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::sqlite_err;
use crate::StoreError;

/// What a write command produced, and whether its writes stay.
pub(crate) struct Done<T> {
    pub value: T,
    /// False: roll the command's savepoint back (e.g. a compare-and-set that did not match).
    pub keep: bool,
}

impl<T> Done<T> {
    pub fn keep(value: T) -> Self {
        Self { value, keep: true }
    }

    pub fn undo(value: T) -> Self {
        Self { value, keep: false }
    }
}

/// One queued write command, type-erased so commands of any result type share the queue.
pub(crate) trait WriteJob: Send {
    /// Runs the command inside its savepoint; true if its writes are to be kept.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the batch's transaction has ended (`commit` is its outcome).
    fn finish(self: Box<Self>, commit: &Result<(), String>);
    /// Whether its answer waits for the commit's fsync.
    fn synced(&self) -> bool;
}

struct Job<T, F> {
    work: Option<F>,
    synced: bool,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> WriteJob for Job<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<Done<T>, StoreError> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        match work(conn) {
            Ok(done) => {
                self.result = Some(Ok(done.value));
                done.keep
            }
            Err(e) => {
                self.result = Some(Err(e));
                false
            }
        }
    }

    fn finish(self: Box<Self>, commit: &Result<(), String>) {
        let answer = match (commit, self.result) {
            (Ok(()), Some(result)) => result,
            // The command's own error says more than the batch's.
            (Err(_), Some(Err(e))) => Err(e),
            (Err(e), _) => Err(StoreError::Database(format!("group commit failed: {e}"))),
            (Ok(()), None) => Err(StoreError::Database("write command was not run".into())),
        };
        // The caller may have gone away (its future dropped): nothing to tell then.
        let _ = self.reply.send(answer);
    }

    fn synced(&self) -> bool {
        self.synced
    }
}

pub(crate) type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// The handles the store keeps: queues in, threads to join on drop.
pub(crate) struct Threads {
    /// Connections for `read_now`, one per caller at a time.
    inline: Mutex<Vec<Connection>>,
    inline_count: usize,
    writes: Option<mpsc::Sender<Box<dyn WriteJob>>>,
    reads: Option<mpsc::Sender<ReadJob>>,
    handles: Vec<JoinHandle<()>>,
}

pub(crate) struct Bounds {
    pub write_queue_max: usize,
    pub write_batch_max: usize,
    pub read_queue_max: usize,
    /// The write connection runs with `synchronous=FULL`: an unsynced batch switches it to
    /// NORMAL for its commit. (With NORMAL throughout, no commit waits for an fsync anyway.)
    pub synced_commits: bool,
}

fn stopped() -> StoreError {
    StoreError::Database("the SQLite store's threads have stopped".into())
}

impl Threads {
    /// `inline`: read-only connections for `read_now`.
    pub fn start(
        writer: Connection,
        readers: Vec<Connection>,
        inline: Vec<Connection>,
        bounds: &Bounds,
    ) -> Result<Self, StoreError> {
        let (write_tx, write_rx) = mpsc::channel(bounds.write_queue_max.max(1));
        let (read_tx, read_rx) = mpsc::channel::<ReadJob>(bounds.read_queue_max.max(1));
        let batch_max = bounds.write_batch_max.max(1);
        let synced_commits = bounds.synced_commits;
        let mut handles = Vec::with_capacity(readers.len() + 1);
        handles.push(spawn("sqlite-writer".into(), move || {
            writer_loop(writer, write_rx, batch_max, synced_commits)
        })?);
        // tokio's mpsc has one receiver: the readers take turns holding it. A reader blocked in
        // recv holds the lock; the others wait for the lock instead — the same thing.
        let read_rx = Arc::new(Mutex::new(read_rx));
        for (i, conn) in readers.into_iter().enumerate() {
            let rx = Arc::clone(&read_rx);
            handles.push(spawn(format!("sqlite-reader-{i}"), move || {
                reader_loop(&conn, &rx)
            })?);
        }
        Ok(Self {
            inline_count: inline.len(),
            inline: Mutex::new(inline),
            writes: Some(write_tx),
            reads: Some(read_tx),
            handles,
        })
    }

    /// The writer and reader threads, one connection each, and `read_now`'s.
    pub fn connections(&self) -> usize {
        self.handles.len() + self.inline_count
    }

    /// Jobs waiting in the write and read queues (for the pool metric).
    pub fn queued(&self) -> (usize, usize) {
        let depth = |tx: Option<usize>, max: Option<usize>| match (tx, max) {
            (Some(free), Some(max)) => max.saturating_sub(free),
            _ => 0,
        };
        (
            depth(
                self.writes.as_ref().map(|t| t.capacity()),
                self.writes.as_ref().map(|t| t.max_capacity()),
            ),
            depth(
                self.reads.as_ref().map(|t| t.capacity()),
                self.reads.as_ref().map(|t| t.max_capacity()),
            ),
        )
    }

    /// Queues a write command and waits until its batch committed.
    pub async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<Done<T>, StoreError> + Send + 'static,
    {
        self.queue_write(work, true).await
    }

    /// [`Self::write`], answered once its batch committed but, if every command of the batch
    /// is unsynced, before the fsync (see the module doc).
    pub async fn write_unsynced<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<Done<T>, StoreError> + Send + 'static,
    {
        self.queue_write(work, false).await
    }

    async fn queue_write<T, F>(&self, work: F, synced: bool) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<Done<T>, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn WriteJob> = Box::new(Job {
            work: Some(work),
            synced,
            result: None,
            reply,
        });
        let queue = self.writes.as_ref().ok_or_else(stopped)?;
        queue.send(job).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// A point read: on the calling thread if one of `read_now`'s connections is free, else
    /// queued to the readers like `read`. Only for reads that touch a handful of rows.
    pub async fn read_now<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = || {
            self.inline
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        let Some(conn) = pool().pop() else {
            return self.read(work).await;
        };
        let answer = work(&conn);
        pool().push(conn);
        answer
    }

    /// Runs a read on one of the reader connections.
    pub async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            let _ = reply.send(work(conn));
        });
        let queue = self.reads.as_ref().ok_or_else(stopped)?;
        queue.send(job).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

impl Drop for Threads {
    /// Closing the queues ends the threads (the writer first finishes what is queued); joining
    /// them means the database file is closed once the store is gone, so it can be reopened.
    fn drop(&mut self) {
        self.writes.take();
        self.reads.take();
        for handle in self.handles.drain(..) {
            if handle.join().is_err() {
                tracing::error!("a SQLite store thread panicked");
            }
        }
    }
}

/// Names fit Linux's 15-byte thread name, so `bench load` can tell the writer from a
/// reader in /proc (the longer `paygate-sqlite-…` both showed as `paygate-sqlite-`).
fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, StoreError> {
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .map_err(|e| StoreError::Database(format!("cannot start a SQLite thread: {e}")))
}

fn reader_loop(conn: &Connection, queue: &Mutex<mpsc::Receiver<ReadJob>>) {
    loop {
        let job = {
            let mut rx = queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            rx.blocking_recv()
        };
        match job {
            Some(job) => job(conn),
            None => return,
        }
    }
}

fn writer_loop(
    mut conn: Connection,
    mut queue: mpsc::Receiver<Box<dyn WriteJob>>,
    batch_max: usize,
    synced_commits: bool,
) {
    let mut batch: Vec<Box<dyn WriteJob>> = Vec::with_capacity(batch_max);
    // What the connection is set to now: FULL while synced_commits, until an unsynced batch.
    let mut syncing = synced_commits;
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < batch_max {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let want = synced_commits && batch.iter().any(|job| job.synced());
        let commit = set_synced(&conn, &mut syncing, want)
            .and_then(|()| run_batch(&mut conn, &mut batch))
            .map_err(|e| e.to_string());
        tracing::trace!(
            commands = batch.len(),
            elapsed_us = started.elapsed().as_micros(),
            "SQLite batch committed"
        );
        if let Err(e) = &commit {
            tracing::error!(error = %e, commands = batch.len(), "SQLite group commit failed");
        }
        for job in batch.drain(..) {
            job.finish(&commit);
        }
    }
}

/// Switches the write connection between FULL (`want`) and NORMAL before a batch begins.
fn set_synced(conn: &Connection, syncing: &mut bool, want: bool) -> Result<(), StoreError> {
    if *syncing != want {
        exec(
            conn,
            if want {
                "PRAGMA synchronous = FULL"
            } else {
                "PRAGMA synchronous = NORMAL"
            },
        )?;
        *syncing = want;
    }
    Ok(())
}

/// One transaction for the whole batch, one savepoint per command.
fn run_batch(conn: &mut Connection, batch: &mut [Box<dyn WriteJob>]) -> Result<(), StoreError> {
    conn.prepare_cached("BEGIN IMMEDIATE")
        .and_then(|mut s| s.execute([]))
        .map_err(sqlite_err)?;
    let result = run_commands(conn, batch);
    if result.is_ok() {
        match conn
            .prepare_cached("COMMIT")
            .and_then(|mut s| s.execute([]))
        {
            Ok(_) => return Ok(()),
            Err(e) => {
                rollback(conn);
                return Err(sqlite_err(e));
            }
        }
    }
    rollback(conn);
    result
}

fn run_commands(conn: &Connection, batch: &mut [Box<dyn WriteJob>]) -> Result<(), StoreError> {
    for job in batch.iter_mut() {
        exec(conn, "SAVEPOINT command")?;
        let keep = job.run(conn);
        // An I/O error or a full disk makes SQLite roll the whole transaction back by itself;
        // carrying on would run the next commands outside any transaction.
        if conn.is_autocommit() {
            return Err(StoreError::Database(
                "SQLite aborted the batch's transaction".into(),
            ));
        }
        if !keep {
            exec(conn, "ROLLBACK TO command")?;
        }
        exec(conn, "RELEASE command")?;
    }
    Ok(())
}

fn exec(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(|_| ())
        .map_err(sqlite_err)
}

fn rollback(conn: &Connection) {
    if !conn.is_autocommit() {
        if let Err(e) = conn.execute_batch("ROLLBACK") {
            tracing::error!(error = %e, "SQLite rollback failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job<T: Send + 'static>(
        work: impl FnOnce(&Connection) -> Result<Done<T>, StoreError> + Send + 'static,
    ) -> (Box<dyn WriteJob>, oneshot::Receiver<Result<T, StoreError>>) {
        job_synced(true, work)
    }

    fn job_synced<T: Send + 'static>(
        synced: bool,
        work: impl FnOnce(&Connection) -> Result<Done<T>, StoreError> + Send + 'static,
    ) -> (Box<dyn WriteJob>, oneshot::Receiver<Result<T, StoreError>>) {
        let (reply, answer) = oneshot::channel();
        (
            Box::new(Job {
                work: Some(work),
                synced,
                result: None,
                reply,
            }),
            answer,
        )
    }

    fn insert(conn: &Connection, v: i64) -> Result<(), StoreError> {
        conn.execute("INSERT INTO t (v) VALUES (?1)", [v])
            .map(|_| ())
            .map_err(sqlite_err)
    }

    #[test]
    fn a_failing_or_undone_command_rolls_back_only_itself() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER PRIMARY KEY)")
            .unwrap();
        let (kept, kept_answer) = job(|c| insert(c, 1).map(|()| Done::keep("kept")));
        let (undone, undone_answer) = job(|c| insert(c, 2).map(|()| Done::undo("undone")));
        let (failed, failed_answer) = job(|c| {
            insert(c, 3)?;
            insert(c, 1)?; // duplicate key: the command fails after a successful write
            Ok(Done::keep("unreachable"))
        });
        let (last, last_answer) = job(|c| insert(c, 4).map(|()| Done::keep("last")));
        let mut batch = vec![kept, undone, failed, last];
        let commit = run_batch(&mut conn, &mut batch).map_err(|e| e.to_string());
        assert!(commit.is_ok());
        for j in batch {
            j.finish(&commit);
        }
        assert_eq!(kept_answer.blocking_recv().unwrap().unwrap(), "kept");
        assert_eq!(undone_answer.blocking_recv().unwrap().unwrap(), "undone");
        assert!(matches!(
            failed_answer.blocking_recv().unwrap(),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(last_answer.blocking_recv().unwrap().unwrap(), "last");
        let mut stmt = conn.prepare("SELECT v FROM t ORDER BY v").unwrap();
        let rows: Vec<i64> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(rows, [1, 4]);
        assert!(conn.is_autocommit(), "the batch's transaction is closed");
    }

    /// A WAL-mode file in a fresh directory, and its writer.
    fn wal_file() -> (std::path::PathBuf, Connection) {
        let dir = std::env::temp_dir().join(format!("paygate-threads-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))
            .unwrap();
        (path, writer)
    }

    #[test]
    fn a_point_read_runs_on_the_callers_thread_while_a_connection_is_free() {
        let (path, writer) = wal_file();
        let reader = || Connection::open(&path).unwrap();
        let bounds = Bounds {
            write_queue_max: 16,
            write_batch_max: 4,
            read_queue_max: 16,
            synced_commits: true,
        };
        let threads = Threads::start(writer, vec![reader()], vec![reader()], &bounds).unwrap();
        assert_eq!(threads.connections(), 3, "writer, reader, inline");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let here = std::thread::current().id();
        let on = |t: &Threads| {
            rt.block_on(t.read_now(|c| {
                c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                    .map_err(sqlite_err)?;
                Ok(std::thread::current().id())
            }))
            .unwrap()
        };
        assert_eq!(on(&threads), here);
        // None free (another caller holds it): the reader thread answers instead.
        let held = threads.inline.lock().unwrap().pop().unwrap();
        assert_ne!(on(&threads), here);
        threads.inline.lock().unwrap().push(held);
        assert_eq!(on(&threads), here);
        drop(threads);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// What `PRAGMA synchronous` each queued command's batch committed with, batches of two.
    fn commit_modes(synced_commits: bool, synced: &[bool]) -> Vec<i64> {
        let (path, writer) = wal_file();
        // As the store opens it: FULL unless the URL said synchronous=normal.
        let opened = if synced_commits { "FULL" } else { "NORMAL" };
        writer.pragma_update(None, "synchronous", opened).unwrap();
        let (tx, rx) = mpsc::channel(synced.len());
        let answers: Vec<_> = synced
            .iter()
            .map(|&synced| {
                let (job, answer) = job_synced(synced, |c| {
                    c.query_row("PRAGMA synchronous", [], |r| r.get::<_, i64>(0))
                        .map(Done::keep)
                        .map_err(sqlite_err)
                });
                tx.try_send(job).ok().unwrap();
                answer
            })
            .collect();
        drop(tx);
        writer_loop(writer, rx, 2, synced_commits);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
        answers
            .into_iter()
            .map(|a| a.blocking_recv().unwrap().unwrap())
            .collect()
    }

    #[test]
    fn a_batch_of_unsynced_commands_alone_commits_without_the_fsync() {
        const FULL: i64 = 2;
        const NORMAL: i64 = 1;
        // Batches of two: [unsynced, unsynced] [synced, unsynced] [unsynced] — and back.
        let queued = [false, false, true, false, false];
        assert_eq!(
            commit_modes(true, &queued),
            [NORMAL, NORMAL, FULL, FULL, NORMAL]
        );
        assert_eq!(commit_modes(true, &[false, true, true]), [FULL, FULL, FULL]);
        // A store opened with synchronous=normal never syncs a commit: nothing to switch.
        assert_eq!(commit_modes(false, &queued), [NORMAL; 5]);
    }

    #[test]
    fn a_failed_commit_fails_every_command_of_the_batch() {
        let (ok, answer) = job(|_| Ok(Done::keep(7)));
        ok.finish(&Err("disk I/O error".into()));
        assert!(
            matches!(answer.blocking_recv().unwrap(), Err(StoreError::Database(m)) if m.contains("disk I/O"))
        );
    }
}
