//! Group commit for enqueues. Every `enqueue` call in this process hands its
//! jobs to one task, which takes whatever calls have gathered while the
//! previous transaction ran and commits them together. Alone, a call waits
//! for nothing extra; under load many HTTP requests share one transaction.
//! Each caller is answered only after the commit that holds its jobs, so a
//! reply still means the jobs are on disk.

use super::codec::{self as row, ids};
use super::connect::begin;
use super::{JOB_COLUMNS, from_sqlx};
use crate::broker::{BrokerError, BrokerResult, EnqueueRequest, Enqueued};
use crate::job::{Job, JobState, now_ms};
use serde_json::Value;
use sqlx::Row;
use sqlx::sqlite::SqlitePool;
use std::sync::Arc;
use tokio::sync::{Notify, mpsc, oneshot};

const Q_ENQUEUE: &str = include_str!("queries/enqueue.sql");

/// Jobs committed in one transaction at most; a bigger backlog waits for the next.
const GROUP_JOBS: usize = 5000;

struct Call {
    jobs: Vec<EnqueueRequest>,
    reply: oneshot::Sender<BrokerResult<Vec<Enqueued>>>,
}

/// The handle `SqliteBroker` keeps; cloning it shares the same task.
#[derive(Debug, Clone)]
pub(super) struct Enqueuer {
    calls: mpsc::UnboundedSender<Call>,
}

impl Enqueuer {
    /// Starts the committing task; it ends when the last handle is dropped.
    pub(super) fn spawn(writer: SqlitePool, work: Arc<Notify>) -> Self {
        let (calls, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(writer, work, rx));
        Enqueuer { calls }
    }

    /// Enqueues `jobs` in the next group and waits for its commit.
    pub(super) async fn submit(&self, jobs: Vec<EnqueueRequest>) -> BrokerResult<Vec<Enqueued>> {
        let (reply, answer) = oneshot::channel();
        self.calls
            .send(Call { jobs, reply })
            .map_err(|_| BrokerError::Unavailable("the SQLite writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| BrokerError::Unavailable("the SQLite writer has stopped".into()))?
    }
}

async fn run(writer: SqlitePool, work: Arc<Notify>, mut rx: mpsc::UnboundedReceiver<Call>) {
    while let Some(first) = rx.recv().await {
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
        let counts: Vec<usize> = group.iter().map(|c| c.jobs.len()).collect();
        let (jobs, replies): (Vec<_>, Vec<_>) =
            group.into_iter().map(|c| (c.jobs, c.reply)).unzip();
        match insert(&writer, jobs.into_iter().flatten().collect()).await {
            Ok(mut done) => {
                work.notify_waiters();
                for (reply, n) in replies.into_iter().zip(counts) {
                    let rest = done.split_off(n);
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
    }
}

/// Inserts `jobs` in one transaction; for a job whose unique key an
/// unfinished job holds, returns that job instead.
async fn insert(writer: &SqlitePool, jobs: Vec<EnqueueRequest>) -> BrokerResult<Vec<Enqueued>> {
    let now = now_ms();
    let planned: Vec<Job> = jobs.into_iter().map(|r| row::new_job(r, now)).collect();
    let mut tx = begin(writer).await?;
    let out = insert_in(&mut tx, planned, now).await?;
    tx.commit().await.map_err(from_sqlx)?;
    Ok(out)
}

/// Inserts planned jobs within the caller's transaction.
pub(super) async fn insert_in(
    tx: &mut sqlx::SqliteConnection,
    planned: Vec<Job>,
    now: crate::job::Millis,
) -> BrokerResult<Vec<Enqueued>> {
    insert_with(tx, planned, Vec::new(), now).await
}

/// Inserts planned jobs within the caller's transaction; `extra[i]`, when
/// given, adds columns to job i's row (a workflow step's `pending`,
/// `step_no`, `on_parent_failure`). A `waiting` job takes no fair-share
/// place and joins no serial lane yet: both happen when it is released.
pub(super) async fn insert_with(
    tx: &mut sqlx::SqliteConnection,
    planned: Vec<Job>,
    extra: Vec<Value>,
    now: crate::job::Millis,
) -> BrokerResult<Vec<Enqueued>> {
    // Jobs due now take their fair-share place at once; delayed ones when
    // they become due.
    let pairs: Vec<(String, String)> = planned
        .iter()
        .filter(|j| j.state == JobState::Queued)
        .map(|j| (j.queue.clone(), j.tenant.clone()))
        .collect();
    let mut seqs = super::flow::assign_seqs(tx, &pairs).await?.into_iter();
    let batch = Value::Array(
        planned
            .iter()
            .map(|j| {
                let seq = if j.state == JobState::Queued {
                    seqs.next().unwrap_or(0)
                } else {
                    0
                };
                row::insert_json(j, seq)
            })
            .zip(extra.into_iter().map(Some).chain(std::iter::repeat(None)))
            .map(|(mut row, extra)| {
                if let (Some(Value::Object(cols)), Value::Object(into)) = (extra, &mut row) {
                    into.extend(cols);
                }
                row
            })
            .collect(),
    )
    .to_string();
    let rows = sqlx::query(Q_ENQUEUE)
        .bind(now.0)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await
        .map_err(from_sqlx)?;
    let inserted = ids(&rows)?;
    // New members of serial lanes take their places (in this batch's order).
    let members: Vec<(String, super::serial::Lane)> = rows
        .iter()
        .filter_map(|r| {
            let id: String = r.try_get("id").ok()?;
            if r.try_get::<String, _>("state").ok()? == "waiting" {
                return None;
            }
            let tenant: String = r.try_get("tenant").ok()?;
            let key: String = r.try_get::<Option<String>, _>("serial_key").ok()??;
            Some((id, (tenant, key)))
        })
        .collect();
    if !members.is_empty() {
        // RETURNING has no defined order: the lane order is the batch's.
        let order: std::collections::HashMap<String, usize> = planned
            .iter()
            .enumerate()
            .map(|(i, j)| (j.id.to_string(), i))
            .collect();
        let mut members = members;
        members.sort_by_key(|(id, _)| order.get(id).copied().unwrap_or(usize::MAX));
        super::serial::join(tx, &members).await?;
    }
    let mut out = Vec::with_capacity(planned.len());
    for job in planned {
        if inserted.contains(&job.id.to_string()) {
            out.push(Enqueued { job, created: true });
            continue;
        }
        // Skipped by ON CONFLICT: the id exists (an explicit id enqueued
        // again), or the unique key is held by an unfinished job (possibly
        // one earlier in this same group).
        let by_id = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1");
        let same = sqlx::query(sqlx::AssertSqlSafe(by_id))
            .bind(job.id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        if let Some(same) = same {
            out.push(Enqueued {
                job: crate::broker::request::existing_job(row::job(&same)?, &job.tenant)?,
                created: false,
            });
            continue;
        }
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE tenant = ?1 AND task = ?2 AND unique_key = ?3 \
             AND state IN ('scheduled', 'queued', 'running', 'retrying')"
        );
        let holder = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&job.tenant)
            .bind(&job.task)
            .bind(&job.unique_key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(from_sqlx)?
            .ok_or_else(|| {
                BrokerError::internal(format!(
                    "job {} was neither inserted nor a duplicate",
                    job.id
                ))
            })?;
        out.push(Enqueued {
            job: row::job(&holder)?,
            created: false,
        });
    }
    Ok(out)
}
