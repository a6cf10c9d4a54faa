//! Opening the database (WAL, migrations, one writer), write
//! transactions that wait for the file lock, and the error mapping.

use super::{Durability, LOCK_WAIT, SqliteBroker, enqueue};
use crate::broker::{BrokerError, BrokerResult};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

impl SqliteBroker {
    /// Opens (creating if needed) the database at `path` and applies migrations.
    pub async fn open(path: &str, durability: Durability) -> BrokerResult<Self> {
        if let Some(dir) = Path::new(path).parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                BrokerError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
            .map_err(|e| BrokerError::Config(format!("bad SQLite path `{path}`: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match durability {
                Durability::Normal => SqliteSynchronous::Normal,
                Durability::Full => SqliteSynchronous::Full,
            })
            .busy_timeout(Duration::from_secs(10))
            .statement_cache_capacity(64);
        // Turning a new file to WAL takes an exclusive lock without waiting
        // in SQLite's busy handler, so processes opening a new database at
        // the same moment (an API, a worker and its children) retry here.
        let started = Instant::now();
        loop {
            match setup(&options).await {
                Ok(()) => break,
                Err(e) if started.elapsed() < LOCK_WAIT => {
                    tracing::debug!(error = %e, "Database setup raced another process; retrying");
                    tokio::time::sleep(Duration::from_millis(
                        20 + u64::from(rand::random::<u8>()) % 50,
                    ))
                    .await;
                }
                Err(e) => return Err(e),
            }
        }
        // The writer waits for the lock itself (see `begin`), so SQLite's own
        // busy handler, which sleeps 1, 2, 5, 10... ms, is off for it.
        // It connects with the busy timeout (opening runs pragmas that may
        // wait on another process), then turns it off.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    sqlx::Executor::execute(conn, "PRAGMA busy_timeout = 0").await?;
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await
            .map_err(|e| BrokerError::Unavailable(format!("writer connection: {e}")))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await
            .map_err(|e| BrokerError::Unavailable(format!("reader connection: {e}")))?;
        let work = Arc::new(Notify::new());
        Ok(SqliteBroker {
            enqueuer: enqueue::Enqueuer::spawn(writer.clone(), work.clone()),
            writer,
            reader,
            work,
            clocks: Arc::default(),
        })
    }

    pub(super) async fn begin(&self) -> BrokerResult<Transaction<'static, Sqlite>> {
        begin(&self.writer).await
    }
}

/// Starts a write transaction, waiting for the file lock.
pub(super) async fn begin(writer: &SqlitePool) -> BrokerResult<Transaction<'static, Sqlite>> {
    // IMMEDIATE takes the write lock up front: a deferred transaction that
    // reads and then writes can fail outright when another process wrote
    // in between, instead of waiting for the lock.
    //
    // Another process (a worker's sibling child) may hold the lock. Its
    // transactions last tens of microseconds, so waiting is done here in
    // fine steps: yield for the first couple of milliseconds, then sleep
    // a millisecond at a time. SQLite's busy handler would sleep up to
    // 100 ms between tries and throttle every process to a crawl.
    let started = Instant::now();
    loop {
        match writer.begin_with("BEGIN IMMEDIATE").await {
            Ok(tx) => return Ok(tx),
            Err(e) if is_busy(&e) && started.elapsed() < LOCK_WAIT => {
                if started.elapsed() < Duration::from_millis(2) {
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            Err(e) => return Err(from_sqlx(e)),
        }
    }
}

/// Creates the file in WAL mode and applies migrations.
async fn setup(options: &SqliteConnectOptions) -> BrokerResult<()> {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await
        .map_err(|e| BrokerError::Unavailable(format!("opening the database: {e}")))?;
    let migrated = migrate(&pool).await;
    pool.close().await;
    migrated
}

async fn migrate(pool: &SqlitePool) -> BrokerResult<()> {
    // A process that loses a race to migrate a new file sees the winner's
    // work when `open` retries.
    sqlx::migrate!("./migrations/sqlite")
        .run(pool)
        .await
        .map_err(|e| BrokerError::Unavailable(format!("migrating the SQLite database: {e}")))
}

fn is_busy(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.message().contains("locked") || db.message().contains("busy"))
}

pub(super) fn unavailable(e: sqlx::Error) -> BrokerError {
    BrokerError::Unavailable(e.to_string())
}

/// Busy and I/O errors are worth retrying; the rest are bugs or bad data.
pub(super) fn from_sqlx(e: sqlx::Error) -> BrokerError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            BrokerError::UniqueKeyHeld { holder: None }
        }
        sqlx::Error::Database(db)
            if db.message().contains("locked") || db.message().contains("busy") =>
        {
            BrokerError::Unavailable(e.to_string())
        }
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => BrokerError::Unavailable(e.to_string()),
        _ => BrokerError::internal_from("SQLite", e),
    }
}
