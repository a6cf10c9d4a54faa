//! The ends of attempts and leases: completion (succeed, fail, release
//! in one transaction), progress, cancel, and the maintenance pass that
//! reaps expired leases and promotes due jobs.

use super::codec::{self, ids, missing};
use super::{PROMOTE_BATCH, SqliteBroker, flow, from_sqlx, serial, workflow};
use crate::broker::retention::RETENTION_BATCH;
use crate::broker::{BrokerResult, Completion, Lease, Maintenance, Outcome, Scope};
use crate::job::{Job, JobId, JobState, Millis, duration_ms, now_ms};
use serde_json::{Value, json};
use sqlx::Row;
use std::collections::HashSet;

const Q_SUCCEED: &str = include_str!("queries/succeed.sql");
const Q_FAIL: &str = include_str!("queries/fail.sql");
const Q_RELEASE: &str = include_str!("queries/release.sql");
const Q_SNOOZE: &str = include_str!("queries/snooze.sql");
const Q_REAP: &str = include_str!("queries/reap.sql");
const Q_CANCEL: &str = include_str!("queries/cancel.sql");
const Q_FINISHED_QUEUES: &str = include_str!("queries/finished_queues.sql");
const Q_RETIRE_OLD: &str = include_str!("queries/retire_old.sql");
const Q_RETIRE_EXCESS: &str = include_str!("queries/retire_excess.sql");
const Q_ANY_RETIRED: &str = include_str!("queries/any_retired.sql");
/// Expired leases returned per maintenance pass.
const REAP_BATCH: i64 = 1000;

impl SqliteBroker {
    pub(super) async fn complete_jobs(
        &self,
        completions: Vec<Completion>,
    ) -> BrokerResult<Vec<Lease>> {
        if completions.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin().await?;
        let (stale, freed) = complete_in(&mut tx, &completions).await?;
        tx.commit().await.map_err(from_sqlx)?;
        if freed > 0 {
            self.work.notify_waiters();
        }
        Ok(stale)
    }

    pub(super) async fn store_progress(&self, lease: Lease, progress: Value) -> BrokerResult<bool> {
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

    pub(super) async fn cancel_job(&self, scope: &Scope, id: JobId) -> BrokerResult<Job> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        let row = sqlx::query(Q_CANCEL)
            .bind(now.0)
            .bind(id.to_string())
            .bind(scope.tenant())
            .fetch_optional(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        let mut released = 0;
        if let Some(row) = &row {
            let rows = std::slice::from_ref(row);
            serial::advance(&mut tx, serial::lanes_of(rows)).await?;
            released = workflow::finish(&mut tx, workflow::ended_steps(rows), now).await?;
        }
        tx.commit().await.map_err(from_sqlx)?;
        if released > 0 {
            self.work.notify_waiters();
        }
        match row {
            Some(row) => codec::job(&row),
            None => Err(self.conflict_or_missing(scope, id).await),
        }
    }

    pub(super) async fn maintain_pass(&self) -> BrokerResult<Maintenance> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        let reaped_rows = sqlx::query(Q_REAP)
            .bind(now.0)
            .bind(REAP_BATCH)
            .fetch_all(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        serial::advance(&mut tx, serial::lanes_of(&reaped_rows)).await?;
        workflow::finish(&mut tx, workflow::ended_steps(&reaped_rows), now).await?;
        let repaired = if self.audits.due() {
            workflow::audit(&mut tx, now).await?
        } else {
            0
        };
        serial::repair(&mut tx).await?;
        let reaped: Vec<String> = reaped_rows
            .iter()
            .map(|r| r.try_get::<String, _>("state").map_err(from_sqlx))
            .collect::<BrokerResult<_>>()?;
        let promoted = flow::promote(&mut tx, now, PROMOTE_BATCH).await?;
        sqlx::query("DELETE FROM workers WHERE expires_at < ?1")
            .bind(now.0)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        super::coord::sweep(&mut tx).await?;
        tx.commit().await.map_err(from_sqlx)?;
        self.retire(now).await?;
        let dead = reaped.iter().filter(|s| *s == "failed").count() as u64;
        if repaired > 0 {
            self.work.notify_waiters();
        }
        Ok(Maintenance {
            requeued: reaped.len() as u64 - dead,
            dead,
            promoted,
            repaired,
        })
    }

    /// Deletes finished jobs past their age or beyond the count a queue
    /// keeps, at most [`RETENTION_BATCH`] per queue, outcome and rule, in a
    /// transaction of its own (the reaper's is not held up by it), taken
    /// only when a read finds something to delete (or a count cap is set).
    async fn retire(&self, now: crate::job::Millis) -> BrokerResult<()> {
        let queues: Vec<String> = sqlx::query_scalar(Q_FINISHED_QUEUES)
            .fetch_all(&self.reader)
            .await
            .map_err(from_sqlx)?;
        if queues.is_empty() {
            return Ok(());
        }
        if self.retention.keep.is_none() {
            let oldest_kept = now.0 - duration_ms(self.retention.shortest());
            let due: bool = sqlx::query_scalar(Q_ANY_RETIRED)
                .bind(serde_json::to_string(&queues).unwrap_or_default())
                .bind(oldest_kept)
                .fetch_one(&self.reader)
                .await
                .map_err(from_sqlx)?;
            if !due {
                return Ok(());
            }
        }
        let batch = RETENTION_BATCH as i64;
        let mut tx = self.begin().await?;
        for queue in &queues {
            for state in [JobState::Succeeded, JobState::Failed, JobState::Cancelled] {
                let Some(age) = self.retention.of(state) else {
                    continue;
                };
                sqlx::query(Q_RETIRE_OLD)
                    .bind(queue)
                    .bind(state.as_str())
                    .bind(now.0 - duration_ms(age))
                    .bind(batch)
                    .execute(&mut *tx)
                    .await
                    .map_err(from_sqlx)?;
                if let Some(keep) = self.retention.keep {
                    sqlx::query(Q_RETIRE_EXCESS)
                        .bind(queue)
                        .bind(state.as_str())
                        .bind(i64::try_from(keep).unwrap_or(i64::MAX))
                        .bind(batch)
                        .execute(&mut *tx)
                        .await
                        .map_err(from_sqlx)?;
                }
            }
        }
        for state in [JobState::Succeeded, JobState::Failed, JobState::Cancelled] {
            if let Some(age) = self.retention.of(state) {
                workflow::retire(&mut tx, state.as_str(), now.0 - duration_ms(age), batch).await?;
            }
        }
        tx.commit().await.map_err(from_sqlx)
    }
}

/// Runs one of the acknowledgement statements over `batch` (a JSON array
/// of ends); nothing for an empty batch.
async fn record(
    tx: &mut sqlx::SqliteConnection,
    sql: &'static str,
    now: Millis,
    batch: Vec<Value>,
) -> BrokerResult<Vec<sqlx::sqlite::SqliteRow>> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query(sql)
        .bind(now.0)
        .bind(Value::Array(batch).to_string())
        .fetch_all(&mut *tx)
        .await
        .map_err(from_sqlx)
}

/// Records `completions` inside the caller's write transaction: returns the
/// stale ones (their lease was no longer held) and how many waiting jobs
/// the ends released (serial lanes, workflow children), for a wake-up once
/// the transaction commits.
pub(super) async fn complete_in(
    tx: &mut sqlx::SqliteConnection,
    completions: &[Completion],
) -> BrokerResult<(Vec<Lease>, usize)> {
    let now = now_ms();
    let (mut succeeded, mut failed, mut released, mut snoozed) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for c in completions {
        let (id, attempt) = (c.lease.id.to_string(), c.lease.attempt);
        match &c.outcome {
            Outcome::Succeeded(result) => {
                succeeded.push(json!({"id": id, "attempt": attempt, "result": result.to_string()}))
            }
            Outcome::Failed { error, retry_in } => failed.push(json!({
                "id": id,
                "attempt": attempt,
                "error": crate::job::truncate_error(error),
                "retry_in": retry_in.map(duration_ms),
            })),
            Outcome::Released => released.push(json!({"id": id, "attempt": attempt})),
            Outcome::Snoozed { reason, delay } => snoozed.push(json!({
                "id": id,
                "attempt": attempt,
                "reason": crate::job::truncate_error(reason),
                "delay": duration_ms(*delay),
            })),
        }
    }
    let mut touched = HashSet::new();
    let mut lanes = Vec::new();
    let mut steps = Vec::new();
    for (sql, batch) in [(Q_SUCCEED, succeeded), (Q_FAIL, failed)] {
        let rows = record(tx, sql, now, batch).await?;
        touched.extend(ids(&rows)?);
        lanes.extend(serial::lanes_of(&rows));
        steps.extend(workflow::ended_steps(&rows));
    }
    serial::advance(&mut *tx, lanes).await?;
    let freed = workflow::finish(&mut *tx, steps, now).await?;
    for (sql, batch) in [(Q_RELEASE, released), (Q_SNOOZE, snoozed)] {
        touched.extend(ids(&record(tx, sql, now, batch).await?)?);
    }
    Ok((
        missing(completions.iter().map(|c| c.lease), &touched),
        freed,
    ))
}
