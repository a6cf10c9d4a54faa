//! The embedded broker: one SQLite file in WAL mode, the default of `weir dev`.
//!
//! Writes go through a pool of one connection and `BEGIN IMMEDIATE`, so
//! writers in this process queue in order instead of failing with "database
//! is locked", and writers in other processes (the worker's children) wait
//! on the file lock for up to `busy_timeout`. Reads use a separate pool and
//! never block on writers (WAL). Batches are single statements over
//! `json_each`, so claiming or acknowledging a hundred jobs costs one
//! statement, not a hundred.
//!
//! Durability: with `synchronous=NORMAL` (the default) a commit survives a
//! crash of any process, including kill -9; `FULL` also survives an OS crash
//! or power loss, at the cost of an fsync per commit.

mod enqueue;
mod flow;
mod row;

use super::{
    Broker, BrokerError, BrokerResult, ClaimRequest, ClaimedJob, Completion, EnqueueRequest,
    Enqueued, JobPage, Lease, ListRequest, Maintenance, Outcome, Position, QueueCounts,
    ScheduleState, Scope, Tick,
};
use crate::job::{Job, JobId, JobState, now_ms};
use crate::limit::{TaskLimit, Usage};
use crate::node::WorkerInfo;
use async_trait::async_trait;
use serde_json::{Value, json};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

const Q_ENQUEUE: &str = include_str!("queries/enqueue.sql");
const Q_PROBE: &str = include_str!("queries/probe.sql");
const Q_CLAIM: &str = include_str!("queries/claim.sql");
const Q_CLAIM_IDS: &str = include_str!("queries/claim_ids.sql");
const Q_RENEW: &str = include_str!("queries/renew.sql");
const Q_SUCCEED: &str = include_str!("queries/succeed.sql");
const Q_FAIL: &str = include_str!("queries/fail.sql");
const Q_RELEASE: &str = include_str!("queries/release.sql");
const Q_REAP: &str = include_str!("queries/reap.sql");
const Q_CANCEL: &str = include_str!("queries/cancel.sql");
const Q_RETRY: &str = include_str!("queries/retry.sql");
const Q_LIST: &str = include_str!("queries/list.sql");
const JOB_COLUMNS: &str = "id, tenant, task, queue, state, priority, payload, attempts, \
     max_retries, timeout_ms, unique_key, result, error, progress, created_at, run_at, \
     started_at, finished_at";

/// Due jobs promoted per statement; bounds the time one call holds the write lock.
const PROMOTE_BATCH: i64 = 1000;
/// How long a write waits for the file lock before the broker counts as unavailable.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// Expired leases returned per maintenance pass.
const REAP_BATCH: i64 = 1000;

/// How hard a commit is pushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=NORMAL`: survives a process crash (the default).
    Normal,
    /// `synchronous=FULL`: also survives an OS crash or power loss.
    Full,
}

/// The SQLite broker.
#[derive(Debug, Clone)]
pub struct SqliteBroker {
    /// One connection: every write in this process goes through it, in order.
    writer: SqlitePool,
    /// Readers; WAL lets them run beside the writer.
    reader: SqlitePool,
    /// Wakes this process's idle workers when this process enqueues.
    /// Workers in other processes fall back to short polls.
    work: Arc<Notify>,
    /// Commits concurrent enqueues together (group commit).
    enqueuer: enqueue::Enqueuer,
    /// The queue clocks this process wrote (fair share).
    clocks: Arc<flow::Clocks>,
}

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
            .map_err(|e| BrokerError::Invalid(format!("bad SQLite path `{path}`: {e}")))?
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

    async fn begin(&self) -> BrokerResult<Transaction<'static, Sqlite>> {
        begin(&self.writer).await
    }

    async fn fetch_job(&self, scope: &Scope, id: JobId) -> BrokerResult<Option<Job>> {
        let sql = match scope {
            Scope::All => format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
            Scope::Tenant(_) => {
                format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1 AND tenant = ?2")
            }
        };
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .bind(scope.tenant())
            .fetch_optional(&self.reader)
            .await
            .map_err(from_sqlx)?;
        row.as_ref().map(row::job).transpose()
    }

    /// The state a job is in, for the 409 of a refused cancel or retry.
    async fn conflict_or_missing(&self, scope: &Scope, id: JobId) -> BrokerError {
        match self.fetch_job(scope, id).await {
            Ok(Some(job)) => BrokerError::Conflict(job.state),
            Ok(None) => BrokerError::NotFound,
            Err(e) => e,
        }
    }
}

/// Starts a write transaction, waiting for the file lock.
async fn begin(writer: &SqlitePool) -> BrokerResult<Transaction<'static, Sqlite>> {
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

/// The plain claim: the best `limit` queued jobs of `queues`.
struct ClaimBest<'a> {
    now: crate::job::Millis,
    worker: &'a str,
    expires: i64,
    queues: String,
    limit: i64,
}

impl ClaimBest<'_> {
    async fn run(
        &self,
        conn: &mut sqlx::SqliteConnection,
    ) -> BrokerResult<Vec<sqlx::sqlite::SqliteRow>> {
        sqlx::query(Q_CLAIM)
            .bind(self.now.0)
            .bind(self.worker)
            .bind(self.expires)
            .bind(&self.queues)
            .bind(self.limit)
            .fetch_all(conn)
            .await
            .map_err(from_sqlx)
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

fn unavailable(e: sqlx::Error) -> BrokerError {
    BrokerError::Unavailable(e.to_string())
}

/// Busy and I/O errors are worth retrying; the rest are bugs or bad data.
fn from_sqlx(e: sqlx::Error) -> BrokerError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            BrokerError::Invalid(format!("conflicts with an unfinished job: {db}"))
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
        _ => BrokerError::Internal(e.to_string()),
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn lease_json(leases: impl IntoIterator<Item = Lease>) -> String {
    Value::Array(
        leases
            .into_iter()
            .map(|l| json!({"id": l.id.to_string(), "attempt": l.attempt}))
            .collect(),
    )
    .to_string()
}

/// The leases whose ids the statement did not return: those it did not touch.
fn missing(requested: impl IntoIterator<Item = Lease>, touched: &HashSet<String>) -> Vec<Lease> {
    requested
        .into_iter()
        .filter(|l| !touched.contains(&l.id.to_string()))
        .collect()
}

fn ids(rows: &[sqlx::sqlite::SqliteRow]) -> BrokerResult<HashSet<String>> {
    rows.iter()
        .map(|r| r.try_get::<String, _>(0).map_err(from_sqlx))
        .collect()
}

#[async_trait]
impl Broker for SqliteBroker {
    async fn enqueue(&self, jobs: Vec<EnqueueRequest>) -> BrokerResult<Vec<Enqueued>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        self.enqueuer.submit(jobs).await
    }

    async fn claim(&self, request: ClaimRequest) -> BrokerResult<Vec<ClaimedJob>> {
        if request.limit == 0 || request.queues.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        // Idle workers poll; answering "nothing to do" from a read keeps
        // them from taking the write lock every time they look.
        let probe: Vec<Option<String>> = sqlx::query_scalar(Q_PROBE)
            .bind(serde_json::to_string(&request.queues).unwrap_or_default())
            .bind(now.0)
            .fetch_all(&self.reader)
            .await
            .map_err(from_sqlx)?;
        let due = probe.iter().any(Option::is_none);
        let ready: HashSet<String> = probe.into_iter().flatten().collect();
        if ready.is_empty() && !due {
            return Ok(Vec::new());
        }
        let expires = now.0.saturating_add(ms(request.lease));
        let mut tx = self.begin().await?;
        if due {
            flow::promote(&mut tx, now, PROMOTE_BATCH).await?;
        }
        // After a promotion any queue may have work; otherwise only those
        // the probe saw, in the order asked.
        let visit: Vec<&String> = request
            .queues
            .iter()
            .filter(|q| due || ready.contains(*q))
            .collect();
        let best = ClaimBest {
            now,
            worker: &request.worker,
            expires,
            queues: serde_json::to_string(&visit).unwrap_or_default(),
            limit: i64::try_from(request.limit).unwrap_or(i64::MAX),
        };
        let rows = if request.limits.is_empty() {
            best.run(&mut tx).await?
        } else {
            match flow::admit(&mut tx, &request.limits, &visit, request.limit, now).await? {
                flow::Admission::Unbound(tats) => {
                    let rows = best.run(&mut tx).await?;
                    let tasks = rows
                        .iter()
                        .map(|r| r.try_get::<String, _>("task").map_err(from_sqlx))
                        .collect::<BrokerResult<Vec<_>>>()?;
                    flow::charge(&mut tx, &request.limits, tats, tasks, now).await?;
                    rows
                }
                flow::Admission::Only(ids) if ids.is_empty() => {
                    tx.commit().await.map_err(from_sqlx)?;
                    return Ok(Vec::new());
                }
                flow::Admission::Only(ids) => sqlx::query(Q_CLAIM_IDS)
                    .bind(now.0)
                    .bind(&request.worker)
                    .bind(expires)
                    .bind(serde_json::to_string(&ids).unwrap_or_default())
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(from_sqlx)?,
            }
        };
        let seqs = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("queue").map_err(from_sqlx)?,
                    r.try_get("seq").map_err(from_sqlx)?,
                ))
            })
            .collect::<BrokerResult<Vec<(String, i64)>>>()?;
        self.clocks.advance(&mut tx, seqs).await?;
        let mut claimed = rows
            .iter()
            .map(row::claimed)
            .collect::<BrokerResult<Vec<_>>>()?;
        // RETURNING has no defined order; hand them out as they were ranked.
        let rank = |queue: &str| visit.iter().position(|q| *q == queue).unwrap_or(usize::MAX);
        claimed.sort_by(|a, b| {
            rank(&a.queue)
                .cmp(&rank(&b.queue))
                .then(b.priority.cmp(&a.priority))
                .then(a.lease.id.cmp(&b.lease.id))
        });
        tx.commit().await.map_err(from_sqlx)?;
        Ok(claimed)
    }

    async fn renew(&self, leases: &[Lease], lease: Duration) -> BrokerResult<Vec<Lease>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let expires = now_ms().0.saturating_add(ms(lease));
        let mut tx = self.begin().await?;
        let rows = sqlx::query(Q_RENEW)
            .bind(expires)
            .bind(lease_json(leases.iter().copied()))
            .fetch_all(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(missing(leases.iter().copied(), &ids(&rows)?))
    }

    async fn complete(&self, completions: Vec<Completion>) -> BrokerResult<Vec<Lease>> {
        if completions.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let (mut succeeded, mut failed, mut released) = (Vec::new(), Vec::new(), Vec::new());
        for c in &completions {
            let (id, attempt) = (c.lease.id.to_string(), c.lease.attempt);
            match &c.outcome {
                Outcome::Succeeded(result) => succeeded
                    .push(json!({"id": id, "attempt": attempt, "result": result.to_string()})),
                Outcome::Failed { error, retry_in } => failed.push(json!({
                    "id": id,
                    "attempt": attempt,
                    "error": crate::job::truncate_error(error),
                    "retry_in": retry_in.map(ms),
                })),
                Outcome::Released => released.push(json!({"id": id, "attempt": attempt})),
            }
        }
        let mut touched = HashSet::new();
        let mut tx = self.begin().await?;
        for (sql, batch) in [(Q_SUCCEED, succeeded), (Q_FAIL, failed)] {
            if batch.is_empty() {
                continue;
            }
            let rows = sqlx::query(sql)
                .bind(now.0)
                .bind(Value::Array(batch).to_string())
                .fetch_all(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            touched.extend(ids(&rows)?);
        }
        if !released.is_empty() {
            let rows = sqlx::query(Q_RELEASE)
                .bind(Value::Array(released).to_string())
                .fetch_all(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            touched.extend(ids(&rows)?);
        }
        tx.commit().await.map_err(from_sqlx)?;
        Ok(missing(completions.iter().map(|c| c.lease), &touched))
    }

    async fn set_progress(&self, lease: Lease, progress: Value) -> BrokerResult<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE jobs SET progress = ?1 WHERE id = ?2 AND attempts = ?3 AND state = 'running'",
        )
        .bind(progress.to_string())
        .bind(lease.id.to_string())
        .bind(lease.attempt)
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(done.rows_affected() == 1)
    }

    async fn get(&self, scope: &Scope, id: JobId) -> BrokerResult<Option<Job>> {
        self.fetch_job(scope, id).await
    }

    async fn list(&self, request: ListRequest) -> BrokerResult<JobPage> {
        let limit = request.limit.max(1);
        let rows = sqlx::query(Q_LIST)
            .bind(request.scope.tenant())
            .bind(request.queue.as_deref())
            .bind(request.state.map(JobState::as_str))
            .bind(request.task.as_deref())
            .bind(request.cursor.map(|c| c.to_string()))
            .bind(i64::try_from(limit + 1).unwrap_or(i64::MAX))
            .fetch_all(&self.reader)
            .await
            .map_err(from_sqlx)?;
        let mut data = rows
            .iter()
            .map(row::job)
            .collect::<BrokerResult<Vec<_>>>()?;
        let has_more = data.len() > limit;
        data.truncate(limit);
        let next_cursor = if has_more {
            data.last().map(|j| j.id)
        } else {
            None
        };
        Ok(JobPage {
            data,
            next_cursor,
            has_more,
        })
    }

    async fn cancel(&self, scope: &Scope, id: JobId) -> BrokerResult<Job> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(Q_CANCEL)
            .bind(now_ms().0)
            .bind(id.to_string())
            .bind(scope.tenant())
            .fetch_optional(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)?;
        match row {
            Some(row) => row::job(&row),
            None => Err(self.conflict_or_missing(scope, id).await),
        }
    }

    async fn retry(&self, scope: &Scope, id: JobId) -> BrokerResult<Job> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(Q_RETRY)
            .bind(now_ms().0)
            .bind(id.to_string())
            .bind(scope.tenant())
            .fetch_optional(&mut *tx)
            .await;
        let row = match row {
            Ok(row) => row,
            // Another unfinished job took the unique key meanwhile.
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                return Err(BrokerError::Invalid(
                    "an unfinished job of this task already holds its unique_key".into(),
                ));
            }
            Err(e) => return Err(from_sqlx(e)),
        };
        tx.commit().await.map_err(from_sqlx)?;
        self.work.notify_waiters();
        match row {
            Some(row) => row::job(&row),
            None => Err(self.conflict_or_missing(scope, id).await),
        }
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> BrokerResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO queues (name, paused, updated_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at",
        )
        .bind(queue)
        .bind(paused)
        .bind(now_ms().0)
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)?;
        if !paused {
            self.work.notify_waiters();
        }
        Ok(())
    }

    async fn queue_counts(&self) -> BrokerResult<Vec<QueueCounts>> {
        let mut queues: BTreeMap<String, QueueCounts> = BTreeMap::new();
        let paused = sqlx::query("SELECT name, paused FROM queues")
            .fetch_all(&self.reader)
            .await
            .map_err(from_sqlx)?;
        for row in paused {
            let name: String = row.try_get(0).map_err(from_sqlx)?;
            let flag: bool = row.try_get(1).map_err(from_sqlx)?;
            queues.insert(
                name.clone(),
                QueueCounts {
                    name,
                    paused: flag,
                    counts: BTreeMap::new(),
                },
            );
        }
        let rows = sqlx::query("SELECT queue, state, COUNT(*) FROM jobs GROUP BY queue, state")
            .fetch_all(&self.reader)
            .await
            .map_err(from_sqlx)?;
        for row in rows {
            let name: String = row.try_get(0).map_err(from_sqlx)?;
            let state: String = row.try_get(1).map_err(from_sqlx)?;
            let count: i64 = row.try_get(2).map_err(from_sqlx)?;
            let state = JobState::from_str(&state).map_err(BrokerError::Internal)?;
            queues
                .entry(name.clone())
                .or_insert_with(|| QueueCounts {
                    name,
                    paused: false,
                    counts: BTreeMap::new(),
                })
                .counts
                .insert(state, u64::try_from(count).unwrap_or(0));
        }
        Ok(queues.into_values().collect())
    }

    async fn purge(&self, queue: &str) -> BrokerResult<u64> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "DELETE FROM jobs WHERE queue = ?1 AND state IN ('scheduled', 'queued', 'retrying')",
        )
        .bind(queue)
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(done.rows_affected())
    }

    async fn maintain(&self) -> BrokerResult<Maintenance> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        let reaped: Vec<String> = sqlx::query_scalar(Q_REAP)
            .bind(now.0)
            .bind(REAP_BATCH)
            .fetch_all(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        let promoted = flow::promote(&mut tx, now, PROMOTE_BATCH).await?;
        sqlx::query("DELETE FROM workers WHERE expires_at < ?1")
            .bind(now.0)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)?;
        let dead = reaped.iter().filter(|s| *s == "failed").count() as u64;
        Ok(Maintenance {
            requeued: reaped.len() as u64 - dead,
            dead,
            promoted,
        })
    }

    async fn heartbeat(&self, info: &WorkerInfo, ttl: Duration) -> BrokerResult<()> {
        let body = serde_json::to_string(info).map_err(|e| BrokerError::Internal(e.to_string()))?;
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO workers (id, info, expires_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (id) DO UPDATE SET info = excluded.info, expires_at = excluded.expires_at",
        )
        .bind(&info.id)
        .bind(body)
        .bind(now_ms().0.saturating_add(ms(ttl)))
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)
    }

    async fn remove_worker(&self, id: &str) -> BrokerResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM workers WHERE id = ?1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)
    }

    async fn workers(&self) -> BrokerResult<Vec<WorkerInfo>> {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT info FROM workers WHERE expires_at >= ?1 ORDER BY id")
                .bind(now_ms().0)
                .fetch_all(&self.reader)
                .await
                .map_err(from_sqlx)?;
        rows.iter()
            .map(|r| serde_json::from_str(r).map_err(|e| BrokerError::Internal(e.to_string())))
            .collect()
    }

    async fn fire(&self, tick: Tick) -> BrokerResult<Option<Job>> {
        let now = now_ms();
        let id = JobId::for_tick(&tick.schedule, tick.fire_time);
        let run_at = tick.job.run_at.unwrap_or(now);
        let job = tick.job.into_job(id, now, run_at);
        let mut tx = self.begin().await?;
        let fresh = sqlx::query(
            "INSERT INTO cron_fires (schedule, fire_time, job_id) VALUES (?1, ?2, ?3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&tick.schedule)
        .bind(tick.fire_time.0)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?
        .rows_affected()
            == 1;
        if !fresh {
            tx.commit().await.map_err(from_sqlx)?;
            return Ok(None);
        }
        let mut done = enqueue::insert_in(&mut tx, vec![job], now).await?;
        sqlx::query(
            "INSERT INTO schedules (name, last_fire, last_job) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO UPDATE SET last_fire = excluded.last_fire, last_job = excluded.last_job \
             WHERE schedules.last_fire IS NULL OR schedules.last_fire < excluded.last_fire",
        )
        .bind(&tick.schedule)
        .bind(tick.fire_time.0)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)?;
        self.work.notify_waiters();
        Ok(done.pop().filter(|e| e.created).map(|e| e.job))
    }

    async fn schedule_states(&self, names: &[String]) -> BrokerResult<Vec<ScheduleState>> {
        let rows: Vec<(String, Option<i64>, Option<String>, i64)> = sqlx::query_as(
            "SELECT name, last_fire, last_job, paused FROM schedules \
             WHERE name IN (SELECT value FROM json_each(?1))",
        )
        .bind(serde_json::to_string(names).unwrap_or_default())
        .fetch_all(&self.reader)
        .await
        .map_err(from_sqlx)?;
        let known: std::collections::HashMap<String, ScheduleState> = rows
            .into_iter()
            .map(|(name, last_fire, last_job, paused)| {
                (
                    name.clone(),
                    ScheduleState {
                        name,
                        last_fire: last_fire.map(crate::job::Millis),
                        last_job: last_job.and_then(|j| j.parse().ok()),
                        paused: paused == 1,
                    },
                )
            })
            .collect();
        Ok(names
            .iter()
            .map(|n| {
                known.get(n).cloned().unwrap_or(ScheduleState {
                    name: n.clone(),
                    last_fire: None,
                    last_job: None,
                    paused: false,
                })
            })
            .collect())
    }

    async fn set_schedule_paused(&self, name: &str, paused: bool) -> BrokerResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO schedules (name, paused) VALUES (?1, ?2) \
             ON CONFLICT (name) DO UPDATE SET paused = excluded.paused",
        )
        .bind(name)
        .bind(i64::from(paused))
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)
    }

    async fn position(&self, job: &Job) -> BrokerResult<Position> {
        flow::position(&self.reader, job).await
    }

    async fn usage(&self, task: &str, limit: &TaskLimit) -> BrokerResult<Usage> {
        flow::usage(&self.reader, task, limit, now_ms()).await
    }

    async fn wait_for_work(&self, max: Duration) {
        let _ = tokio::time::timeout(max, self.work.notified()).await;
    }

    async fn ping(&self) -> BrokerResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}
