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
            retention: crate::broker::Retention::default(),
            audits: Arc::default(),
            promotions: Arc::default(),
        })
    }

    /// The same broker, keeping finished jobs as `retention` says.
    pub fn with_retention(mut self, retention: crate::broker::Retention) -> Self {
        self.retention = retention;
        self
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

/// SQLite's primary result codes for refusals that are not the caller's
/// fault and pass (a lock, memory, a read-only or full disk, I/O): the
/// broker is unavailable for now, 503 with `Retry-After` at the API.
const UNAVAILABLE_CODES: [(i64, &str); 9] = [
    (5, "SQLITE_BUSY"),
    (6, "SQLITE_LOCKED"),
    (7, "SQLITE_NOMEM"),
    (8, "SQLITE_READONLY"),
    (9, "SQLITE_INTERRUPT"),
    (10, "SQLITE_IOERR"),
    (13, "SQLITE_FULL"),
    (14, "SQLITE_CANTOPEN"),
    (15, "SQLITE_PROTOCOL"),
];

/// `SQLITE_TOOBIG`: a value over SQLite's size limit (the caller's data).
const TOO_BIG: i64 = 18;

/// The primary result code of a database error (extended codes carry it
/// in their low byte).
fn primary_code(db: &dyn sqlx::error::DatabaseError) -> Option<i64> {
    db.code()
        .and_then(|c| c.parse::<i64>().ok())
        .map(|c| c & 0xff)
}

/// Refusals that pass are unavailable; a unique index is a held key; a
/// value too large is invalid; the rest are bugs.
pub(super) fn from_sqlx(e: sqlx::Error) -> BrokerError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            BrokerError::UniqueKeyHeld { holder: None }
        }
        sqlx::Error::Database(db) => match primary_code(db.as_ref()) {
            Some(code) if UNAVAILABLE_CODES.iter().any(|(c, _)| *c == code) => {
                BrokerError::Unavailable(e.to_string())
            }
            Some(TOO_BIG) => BrokerError::Invalid(format!("a value is too large to store: {e}")),
            _ if db.message().contains("locked") || db.message().contains("busy") => {
                BrokerError::Unavailable(e.to_string())
            }
            _ => BrokerError::internal_from("SQLite", e),
        },
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => BrokerError::Unavailable(e.to_string()),
        _ => BrokerError::internal_from("SQLite", e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::sqlite::SqliteBroker;
    use crate::broker::{Broker, EnqueueRequest};

    fn request(payload_bytes: usize) -> EnqueueRequest {
        EnqueueRequest {
            id: None,
            tenant: "default".into(),
            task: "t".into(),
            queue: "default".into(),
            payload: serde_json::json!({"pad": "x".repeat(payload_bytes)}),
            priority: 5,
            run_at: None,
            max_retries: 0,
            timeout_ms: None,
            unique_key: None,
            serial_key: None,
        }
    }

    /// A database out of room (the disk full, emulated with
    /// `max_page_count` on the writer) refuses writes as unavailable, not
    /// as a bug; a read-only one the same.
    #[tokio::test]
    async fn a_full_or_read_only_database_is_unavailable() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("weir.db");
        let broker = SqliteBroker::open(path.to_str().expect("utf-8"), Durability::Normal)
            .await
            .expect("broker");
        broker
            .enqueue(vec![request(10)])
            .await
            .expect("room for one");
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&broker.writer)
            .await
            .expect("page count");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA max_page_count = {pages}"
        )))
        .execute(&broker.writer)
        .await
        .expect("cap the file");
        let full = broker
            .enqueue((0..50).map(|_| request(8192)).collect())
            .await
            .expect_err("no room");
        assert!(matches!(full, BrokerError::Unavailable(_)), "{full:?}");

        sqlx::query("PRAGMA max_page_count = 1073741823")
            .execute(&broker.writer)
            .await
            .expect("uncap");
        sqlx::query("PRAGMA query_only = 1")
            .execute(&broker.writer)
            .await
            .expect("read only");
        let refused = broker
            .enqueue(vec![request(10)])
            .await
            .expect_err("read only");
        assert!(
            matches!(refused, BrokerError::Unavailable(_)),
            "{refused:?}"
        );
        sqlx::query("PRAGMA query_only = 0")
            .execute(&broker.writer)
            .await
            .expect("writable");
        broker
            .enqueue(vec![request(10)])
            .await
            .expect("writes again");
    }
}
