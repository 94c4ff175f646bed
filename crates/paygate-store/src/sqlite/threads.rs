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
//! A third thread checkpoints: it copies the WAL's pages into the database file on a
//! connection of its own, so the writer does not. SQLite's default would have the writer do it
//! inside the COMMIT that takes the WAL past 1,000 pages — under prepay load (~15 pages a
//! prepay) several times a second, each time holding up that batch and every command queued
//! behind it while a thousand pages are copied and the database file is fsynced. The writer
//! keeps a checkpoint of its own only at `WRITER_CHECKPOINT_PAGES`, where it copies what the
//! checkpointer has not yet (the last few milliseconds' frames): SQLite only rewinds the WAL to
//! its start when the writer begins a transaction with every frame copied, and under steady
//! load the writer's own commits keep the checkpointer from ever finishing that race.

use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
}

struct Job<T, F> {
    work: Option<F>,
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
}

/// The checkpointer copies at most this often: often enough that the writer's own checkpoint
/// finds little left, seldom enough that pages rewritten many times are copied once.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(50);
/// `PRAGMA wal_autocheckpoint` of the writer (pages): its checkpoint after the checkpointer's,
/// which lets the WAL start over (16 MiB of 4 KiB pages). Also the bound should the
/// checkpointer fall behind or fail.
pub(crate) const WRITER_CHECKPOINT_PAGES: i64 = 4_096;

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
}

fn stopped() -> StoreError {
    StoreError::Database("the SQLite store's threads have stopped".into())
}

impl Threads {
    /// `checkpointer`: a read-write connection to the same file, for `checkpointer_loop`;
    /// `inline`: read-only ones for `read_now`.
    pub fn start(
        writer: Connection,
        readers: Vec<Connection>,
        inline: Vec<Connection>,
        checkpointer: Connection,
        bounds: &Bounds,
    ) -> Result<Self, StoreError> {
        let (write_tx, write_rx) = mpsc::channel(bounds.write_queue_max.max(1));
        let (read_tx, read_rx) = mpsc::channel::<ReadJob>(bounds.read_queue_max.max(1));
        // One slot: commits while a checkpoint is due coalesce into it.
        let (nudge_tx, nudge_rx) = std_mpsc::sync_channel(1);
        let batch_max = bounds.write_batch_max.max(1);
        let mut handles = Vec::with_capacity(readers.len() + 2);
        handles.push(spawn("paygate-sqlite-writer".into(), move || {
            writer_loop(writer, write_rx, batch_max, &nudge_tx)
        })?);
        handles.push(spawn("paygate-sqlite-checkpointer".into(), move || {
            checkpointer_loop(&checkpointer, &nudge_rx, CHECKPOINT_INTERVAL)
        })?);
        // tokio's mpsc has one receiver: the readers take turns holding it. A reader blocked in
        // recv holds the lock; the others wait for the lock instead — the same thing.
        let read_rx = Arc::new(Mutex::new(read_rx));
        for (i, conn) in readers.into_iter().enumerate() {
            let rx = Arc::clone(&read_rx);
            handles.push(spawn(format!("paygate-sqlite-reader-{i}"), move || {
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

    /// The writer, reader and checkpointer threads, one connection each, and `read_now`'s.
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
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn WriteJob> = Box::new(Job {
            work: Some(work),
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
    checkpoint_due: &std_mpsc::SyncSender<()>,
) {
    let mut batch: Vec<Box<dyn WriteJob>> = Vec::with_capacity(batch_max);
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < batch_max {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let commit = run_batch(&mut conn, &mut batch).map_err(|e| e.to_string());
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
        // Full: a checkpoint is already due. Gone: the checkpointer failed to start or ended;
        // the writer's own checkpoint still bounds the WAL.
        let _ = checkpoint_due.try_send(());
    }
}

/// Checkpoints (PASSIVE: never waits for the writer or a reader) at most once per `interval`
/// after commits, until the writer's side of `due` is gone.
fn checkpointer_loop(conn: &Connection, due: &std_mpsc::Receiver<()>, interval: Duration) {
    let mut last: Option<Instant> = None;
    let mut wanted = false;
    loop {
        let next = if wanted {
            let wait = last.map_or(Duration::ZERO, |t| interval.saturating_sub(t.elapsed()));
            due.recv_timeout(wait)
        } else {
            due.recv()
                .map_err(|_| std_mpsc::RecvTimeoutError::Disconnected)
        };
        match next {
            Ok(()) => wanted = true,
            Err(std_mpsc::RecvTimeoutError::Timeout) => {
                checkpoint(conn);
                last = Some(Instant::now());
                wanted = false;
            }
            Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn checkpoint(conn: &Connection) {
    let started = Instant::now();
    // (busy, frames in the WAL, frames copied): busy when another connection checkpoints.
    match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    }) {
        Ok((busy, frames, copied)) => tracing::trace!(
            busy,
            frames,
            copied,
            elapsed_us = started.elapsed().as_micros(),
            "SQLite checkpoint"
        ),
        // The writer's own checkpoint still bounds the WAL; the next commit asks again.
        Err(e) => tracing::warn!(error = %e, "SQLite checkpoint failed"),
    }
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
        let (reply, answer) = oneshot::channel();
        (
            Box::new(Job {
                work: Some(work),
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

    /// A WAL-mode file in a fresh directory: the writer (checkpointing only at `autocheckpoint`
    /// pages; 0 never) and a second read-write connection for the checkpointer.
    fn wal_file(autocheckpoint: i64) -> (std::path::PathBuf, Connection, Connection) {
        let dir = std::env::temp_dir().join(format!("paygate-ckpt-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))
            .unwrap();
        writer
            .pragma_update(None, "wal_autocheckpoint", autocheckpoint)
            .unwrap();
        writer
            .execute_batch("CREATE TABLE t (v INTEGER PRIMARY KEY, pad BLOB NOT NULL)")
            .unwrap();
        let checkpointer = Connection::open(&path).unwrap();
        (path, writer, checkpointer)
    }

    fn file_len(path: &std::path::Path) -> u64 {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }

    /// The store's threads with small queues and batches.
    fn start(
        writer: Connection,
        readers: Vec<Connection>,
        inline: Vec<Connection>,
        checkpointer: Connection,
    ) -> Threads {
        let bounds = Bounds {
            write_queue_max: 16,
            write_batch_max: 4,
            read_queue_max: 16,
        };
        Threads::start(writer, readers, inline, checkpointer, &bounds).unwrap()
    }

    /// One command per row, one at a time, each row a 4 KiB blob (a page or more).
    fn write_pages(threads: &Threads, rt: &tokio::runtime::Runtime, rows: std::ops::Range<i64>) {
        for v in rows {
            rt.block_on(threads.write(move |c| {
                c.execute("INSERT INTO t (v, pad) VALUES (?1, zeroblob(4096))", [v])
                    .map_err(sqlite_err)?;
                Ok(Done::keep(()))
            }))
            .unwrap();
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn the_checkpointer_copies_the_wal_into_the_file_without_the_writer() {
        // The writer never checkpoints here: pages reach the database file only through the
        // checkpointer thread.
        let (path, writer, checkpointer) = wal_file(0);
        let before = file_len(&path);
        let threads = start(writer, Vec::new(), Vec::new(), checkpointer);
        let rt = runtime();
        write_pages(&threads, &rt, 0..256);
        let deadline = Instant::now() + Duration::from_secs(10);
        while file_len(&path) < before + 256 * 4096 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            file_len(&path) >= before + 256 * 4096,
            "the rows reached the database file: {} bytes, {before} before",
            file_len(&path)
        );
        // Dropping the store stops the checkpointer too (the test would hang otherwise).
        drop(threads);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn under_steady_writes_the_wal_starts_over_instead_of_growing() {
        // With the writer's checkpoint as in production, the WAL wraps to its start once
        // every frame is copied; without that it would hold all 3 × WRITER_CHECKPOINT_PAGES.
        let (path, writer, checkpointer) = wal_file(WRITER_CHECKPOINT_PAGES);
        let threads = start(writer, Vec::new(), Vec::new(), checkpointer);
        let rt = runtime();
        let rows = 3 * WRITER_CHECKPOINT_PAGES;
        write_pages(&threads, &rt, 0..rows);
        let wal = file_len(&path.with_extension("db-wal"));
        // Frames are a page plus a 24-byte header; a commit past the mark adds a few more.
        let bound = u64::try_from(WRITER_CHECKPOINT_PAGES + 64).unwrap() * (4096 + 24);
        assert!(wal <= bound, "WAL {wal} bytes, bound {bound}");
        let count: i64 = rt
            .block_on(threads.write(|c| {
                c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
                    .map(Done::keep)
                    .map_err(sqlite_err)
            }))
            .unwrap();
        assert_eq!(count, rows);
        drop(threads);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_point_read_runs_on_the_callers_thread_while_a_connection_is_free() {
        let (path, writer, checkpointer) = wal_file(0);
        let reader = || Connection::open(&path).unwrap();
        let threads = start(writer, vec![reader()], vec![reader()], checkpointer);
        assert_eq!(
            threads.connections(),
            4,
            "writer, reader, checkpointer, inline"
        );
        let rt = runtime();
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

    #[test]
    fn a_failed_commit_fails_every_command_of_the_batch() {
        let (ok, answer) = job(|_| Ok(Done::keep(7)));
        ok.finish(&Err("disk I/O error".into()));
        assert!(
            matches!(answer.blocking_recv().unwrap(), Err(StoreError::Database(m)) if m.contains("disk I/O"))
        );
    }
}
