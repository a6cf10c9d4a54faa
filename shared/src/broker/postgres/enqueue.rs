//! Group commit for enqueues, and the insert itself. Every `enqueue` call
//! in this process hands its jobs to one task, which commits whatever calls
//! have gathered while the previous transaction ran. Each caller is answered only after the commit
//! that holds its jobs, so a reply means the jobs are stored.
//!
//! [`insert_in`] runs inside any transaction: a cron tick's, or a caller's
//! own (`PostgresBroker::enqueue_in`), where the jobs exist only if the
//! caller commits.

use super::codec::{self, storable};
use super::notify::Wake;
use super::{JOB_COLUMNS, PostgresBroker, from_sqlx, serial};
use crate::broker::{BrokerError, BrokerResult, EnqueueRequest, Enqueued};
use crate::job::{Job, JobState, Millis, now_ms};
use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{Postgres, Row, Transaction};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

const Q_ENQUEUE: &str = include_str!("queries/enqueue.sql");

/// Jobs committed in one transaction at most; a bigger backlog waits for the next.
const GROUP_JOBS: usize = 5000;
/// Enqueue statements one process runs at once. Each locks the
/// `(queue, tenant)` fair-share rows of its jobs until it commits, so
/// concurrent groups of one tenant wait on each other anyway; one at a
/// time makes the groups larger instead. Measured with `weir-bench
/// postgres-http`, single jobs from 16 / 64 clients: 1 at a time 6,460 /
/// 12,343 jobs/s, 2 at a time 4,681 / 9,191.
const COMMITTERS: usize = 1;

struct Call {
    jobs: Vec<EnqueueRequest>,
    reply: oneshot::Sender<BrokerResult<Vec<Enqueued>>>,
}

/// The handle `PostgresBroker` keeps; cloning it shares the same task.
#[derive(Debug, Clone)]
pub(super) struct Enqueuer {
    calls: mpsc::UnboundedSender<Call>,
}

impl Enqueuer {
    /// Starts the committing task; it ends when the last handle is dropped.
    pub(super) fn spawn(pool: PgPool, wake: Arc<Wake>) -> Self {
        let (calls, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, wake, rx));
        Enqueuer { calls }
    }

    /// Enqueues `jobs` in the next group and waits for its commit.
    pub(super) async fn submit(&self, jobs: Vec<EnqueueRequest>) -> BrokerResult<Vec<Enqueued>> {
        let (reply, answer) = oneshot::channel();
        let stopped = || BrokerError::Unavailable("the Postgres enqueuer has stopped".into());
        self.calls
            .send(Call { jobs, reply })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(pool: PgPool, wake: Arc<Wake>, mut rx: mpsc::UnboundedReceiver<Call>) {
    let committers = Arc::new(Semaphore::new(COMMITTERS));
    loop {
        // A free committer first: calls that arrive meanwhile join the group.
        let Ok(permit) = committers.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut size = first.jobs.len();
        let mut group = vec![first];
        while size < GROUP_JOBS {
            match rx.try_recv() {
                Ok(call) => {
                    size += call.jobs.len();
                    group.push(call);
                }
                Err(_) => break,
            }
        }
        let (pool, wake) = (pool.clone(), wake.clone());
        tokio::spawn(async move {
            let counts: Vec<usize> = group.iter().map(|c| c.jobs.len()).collect();
            let (jobs, replies): (Vec<_>, Vec<_>) =
                group.into_iter().map(|c| (c.jobs, c.reply)).unzip();
            match insert(&pool, jobs.into_iter().flatten().collect()).await {
                Ok(mut done) => {
                    if done
                        .iter()
                        .any(|e| e.created && e.job.state == JobState::Queued)
                    {
                        wake.work_added();
                    }
                    for (reply, n) in replies.into_iter().zip(counts) {
                        let rest = done.split_off(n.min(done.len()));
                        let _ = reply.send(Ok(done));
                        done = rest;
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
            drop(permit);
        });
    }
}

/// The job an enqueue request becomes, with its id and timestamps.
pub(super) fn new_job(r: EnqueueRequest, now: Millis) -> Job {
    let run_at = r.run_at.unwrap_or(now);
    let id = r.id.unwrap_or_default();
    r.into_job(id, now, run_at)
}

/// Inserts `jobs` in one statement.
async fn insert(pool: &PgPool, jobs: Vec<EnqueueRequest>) -> BrokerResult<Vec<Enqueued>> {
    let now = now_ms();
    let planned: Vec<Job> = jobs.into_iter().map(|r| new_job(r, now)).collect();
    if planned.iter().any(|j| j.serial_key.is_some()) {
        // Members of serial lanes take their places in the same step.
        let mut tx = pool.begin().await.map_err(from_sqlx)?;
        let out = insert_in(&mut tx, planned).await?;
        tx.commit().await.map_err(from_sqlx)?;
        return Ok(out);
    }
    // One statement is one atomic step: no transaction around it, so the
    // fair-share rows it locks are held only while it runs and commits.
    let mut conn = pool.acquire().await.map_err(from_sqlx)?;
    insert_in(&mut conn, planned).await
}

/// Inserts planned jobs within the caller's transaction; for a job whose
/// unique key an unfinished job holds, returns that job instead.
pub(super) async fn insert_in(
    conn: &mut PgConnection,
    mut planned: Vec<Job>,
) -> BrokerResult<Vec<Enqueued>> {
    // Jobs due now take their fair-share place in the statement itself;
    // delayed ones when they become due.
    let n = planned.len();
    let mut cols = Columns::with_capacity(n);
    for j in &planned {
        cols.push(j);
    }
    let rows = cols
        .bind(sqlx::query(Q_ENQUEUE))
        .fetch_all(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    let mut stored: HashMap<Uuid, (i64, i64)> = HashMap::with_capacity(rows.len());
    for row in &rows {
        let id: Uuid = row.try_get("id").map_err(from_sqlx)?;
        let created: i64 = row.try_get("created_at").map_err(from_sqlx)?;
        let run_at: i64 = row.try_get("run_at").map_err(from_sqlx)?;
        stored.insert(id, (created, run_at));
    }
    // New members of serial lanes take their places, in this batch's order.
    let members: Vec<(Uuid, serial::Lane)> = planned
        .iter()
        .filter(|j| stored.contains_key(&j.id.0))
        .filter_map(|j| {
            Some((
                j.id.0,
                (j.tenant.clone(), storable(j.serial_key.as_deref()?)),
            ))
        })
        .collect();
    serial::join(conn, &members).await?;
    let (same_ids, holders) = if stored.len() < n {
        (
            same_ids(conn, &planned, &stored).await?,
            holders(conn, &planned, &stored).await?,
        )
    } else {
        (HashMap::new(), HashMap::new())
    };
    let mut out = Vec::with_capacity(n);
    for mut job in planned.drain(..) {
        if let Some((created, run_at)) = stored.get(&job.id.0) {
            job.created_at = Millis(*created);
            job.run_at = Millis(*run_at);
            out.push(Enqueued { job, created: true });
            continue;
        }
        // Skipped by ON CONFLICT: the id exists (an explicit id enqueued
        // again), or the unique key is held by an unfinished job (possibly
        // one earlier in this same group).
        if let Some(same) = same_ids.get(&job.id.0) {
            out.push(Enqueued {
                job: crate::broker::request::existing_job(same.clone(), &job.tenant)?,
                created: false,
            });
            continue;
        }
        let key = (job.tenant.clone(), job.task.clone(), job.unique_key.clone());
        match holders.get(&key) {
            Some(holder) => out.push(Enqueued {
                job: holder.clone(),
                created: false,
            }),
            // The holder finished between the insert and this read: the
            // caller may simply try again.
            None => {
                return Err(BrokerError::Unavailable(format!(
                    "job {} met a unique key that was released meanwhile; retry",
                    job.id
                )));
            }
        }
    }
    Ok(out)
}

type UniqueKey = (String, String, Option<String>);

/// The stored jobs whose ids the jobs not stored carry (explicit ids
/// enqueued again).
async fn same_ids(
    conn: &mut PgConnection,
    planned: &[Job],
    stored: &HashMap<Uuid, (i64, i64)>,
) -> BrokerResult<HashMap<Uuid, Job>> {
    let ids: Vec<Uuid> = planned
        .iter()
        .filter(|j| !stored.contains_key(&j.id.0))
        .map(|j| j.id.0)
        .collect();
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ANY($1)");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    rows.iter()
        .map(|r| {
            let job = codec::job(r)?;
            Ok((job.id.0, job))
        })
        .collect()
}

/// The unfinished jobs holding the unique keys of the jobs not stored.
async fn holders(
    conn: &mut PgConnection,
    planned: &[Job],
    stored: &HashMap<Uuid, (i64, i64)>,
) -> BrokerResult<HashMap<UniqueKey, Job>> {
    let (mut tenants, mut tasks, mut keys) = (Vec::new(), Vec::new(), Vec::new());
    for j in planned.iter().filter(|j| !stored.contains_key(&j.id.0)) {
        tenants.push(j.tenant.clone());
        tasks.push(j.task.clone());
        keys.push(j.unique_key.clone().unwrap_or_default());
    }
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE (tenant, task, unique_key) IN \
         (SELECT * FROM unnest($1::text[], $2::text[], $3::text[])) \
         AND unique_key IS NOT NULL \
         AND state IN ('waiting', 'scheduled', 'queued', 'running', 'retrying')"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenants)
        .bind(tasks)
        .bind(keys)
        .fetch_all(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    rows.iter()
        .map(|r| {
            let job = codec::job(r)?;
            Ok((
                (job.tenant.clone(), job.task.clone(), job.unique_key.clone()),
                job,
            ))
        })
        .collect()
}

/// The columns of `enqueue.sql`, one array each.
struct Columns {
    id: Vec<Uuid>,
    tenant: Vec<String>,
    task: Vec<String>,
    queue: Vec<String>,
    state: Vec<&'static str>,
    priority: Vec<i16>,
    payload: Vec<String>,
    max_retries: Vec<i32>,
    timeout_ms: Vec<Option<i64>>,
    unique_key: Vec<Option<String>>,
    run_at: Vec<i64>,
    serial_key: Vec<Option<String>>,
}

impl Columns {
    fn with_capacity(n: usize) -> Self {
        Columns {
            id: Vec::with_capacity(n),
            tenant: Vec::with_capacity(n),
            task: Vec::with_capacity(n),
            queue: Vec::with_capacity(n),
            state: Vec::with_capacity(n),
            priority: Vec::with_capacity(n),
            payload: Vec::with_capacity(n),
            max_retries: Vec::with_capacity(n),
            timeout_ms: Vec::with_capacity(n),
            unique_key: Vec::with_capacity(n),
            run_at: Vec::with_capacity(n),
            serial_key: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, j: &Job) {
        self.id.push(j.id.0);
        self.tenant.push(storable(&j.tenant));
        self.task.push(storable(&j.task));
        self.queue.push(storable(&j.queue));
        self.state.push(j.state.as_str());
        self.priority.push(i16::from(j.priority));
        self.payload.push(j.payload.to_string());
        self.max_retries
            .push(i32::try_from(j.max_retries).unwrap_or(i32::MAX));
        self.timeout_ms
            .push(j.timeout_ms.map(|t| i64::try_from(t).unwrap_or(i64::MAX)));
        self.unique_key.push(j.unique_key.as_deref().map(storable));
        self.run_at.push(j.run_at.0);
        self.serial_key.push(j.serial_key.as_deref().map(storable));
    }

    fn bind(
        self,
        q: sqlx::query::Query<'static, Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'static, Postgres, sqlx::postgres::PgArguments> {
        q.bind(self.id)
            .bind(self.tenant)
            .bind(self.task)
            .bind(self.queue)
            .bind(self.state)
            .bind(self.priority)
            .bind(self.payload)
            .bind(self.max_retries)
            .bind(self.timeout_ms)
            .bind(self.unique_key)
            .bind(self.run_at)
            .bind(self.serial_key)
    }
}

impl PostgresBroker {
    /// Enqueues `jobs` inside the caller's transaction: they exist only if
    /// the caller commits (the outbox pattern without an outbox). The
    /// transaction must be on the broker's database, with `search_path`
    /// reaching weir's schema ([`PostgresBroker::begin`] gives one). Idle
    /// workers learn of the jobs within their poll interval, or at once when
    /// [`PostgresBroker::announce`] is called after the commit.
    pub async fn enqueue_in(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        jobs: Vec<EnqueueRequest>,
    ) -> BrokerResult<Vec<Enqueued>> {
        let now = now_ms();
        let planned = jobs.into_iter().map(|r| new_job(r, now)).collect();
        insert_in(tx, planned).await
    }

    /// A transaction on the broker's pool (its `search_path` reaches weir's
    /// schema), for the caller's own statements and [`Self::enqueue_in`].
    pub async fn begin(&self) -> BrokerResult<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(from_sqlx)
    }

    /// Wakes idle workers everywhere (after committing jobs enqueued with
    /// [`Self::enqueue_in`]).
    pub fn announce(&self) {
        self.wake.work_added();
    }
}
