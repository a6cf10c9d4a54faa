//! The ends of attempts and leases: completion (succeed, fail, release in
//! one transaction), progress, cancel, and the maintenance pass (reap
//! expired leases, promote due jobs, expire heartbeats and coordination
//! rows, retire finished jobs), every statement skipping rows another node
//! holds, so every node can run it at once.

use super::codec::{self, lease_arrays, missing, storable};
use super::{PROMOTE_BATCH, PostgresBroker, flow, from_sqlx, serial, workflow};
use crate::broker::retention::RETENTION_BATCH;
use crate::broker::{BrokerResult, Completion, Lease, Maintenance, Outcome, Scope};
use crate::job::{Job, JobId, JobState, duration_ms};
use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgRow};
use std::collections::HashSet;
use uuid::Uuid;

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
/// The ids a fenced statement returned.
fn ids_of(rows: &[PgRow]) -> BrokerResult<Vec<Uuid>> {
    rows.iter()
        .map(|r| r.try_get::<Uuid, _>("id").map_err(from_sqlx))
        .collect()
}

/// Expired leases returned per maintenance pass.
const REAP_BATCH: i64 = 1000;

impl PostgresBroker {
    pub(super) async fn complete_jobs(
        &self,
        completions: Vec<Completion>,
    ) -> BrokerResult<Vec<Lease>> {
        if completions.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await.map_err(from_sqlx)?;
        let (stale, recorded) = self.complete_in(&mut tx, &completions).await?;
        tx.commit().await.map_err(from_sqlx)?;
        if recorded {
            // A finished job frees its permit: an idle slot of this process
            // may now start a job a cap held back.
            self.wake.wake_local();
        }
        Ok(stale)
    }

    /// Records `completions` inside the caller's transaction: returns the
    /// stale ones (their lease was no longer held), and whether any was
    /// recorded (the caller wakes this process's idle slots after the
    /// commit).
    pub(super) async fn complete_in(
        &self,
        tx: &mut PgConnection,
        completions: &[Completion],
    ) -> BrokerResult<(Vec<Lease>, bool)> {
        let (mut ok_ids, mut ok_attempts, mut results) = (Vec::new(), Vec::new(), Vec::new());
        let (mut bad_ids, mut bad_attempts, mut errors, mut retry_in) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut released = Vec::new();
        let (mut nap_ids, mut nap_attempts, mut reasons, mut delays) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for c in completions {
            let attempt = i32::try_from(c.lease.attempt).unwrap_or(i32::MAX);
            match &c.outcome {
                Outcome::Succeeded(result) => {
                    ok_ids.push(c.lease.id.0);
                    ok_attempts.push(attempt);
                    results.push(result.to_string());
                }
                Outcome::Failed { error, retry_in: r } => {
                    bad_ids.push(c.lease.id.0);
                    bad_attempts.push(attempt);
                    errors.push(storable(&crate::job::truncate_error(error)));
                    retry_in.push(r.map(duration_ms));
                }
                Outcome::Released => released.push(c.lease),
                Outcome::Snoozed { reason, delay } => {
                    nap_ids.push(c.lease.id.0);
                    nap_attempts.push(attempt);
                    reasons.push(storable(&crate::job::truncate_error(reason)));
                    delays.push(duration_ms(*delay));
                }
            }
        }
        let mut touched: HashSet<Uuid> = HashSet::new();
        let mut lanes = Vec::new();
        let mut steps = Vec::new();
        // Plans for the batch at hand: a generic plan cached while the
        // table was nearly empty (a fresh schema that a burst fills
        // faster than autovacuum analyzes it) scans the whole table for
        // each batch; measured on a 10,000-step workflow burst, completions
        // then took seconds and leases expired.
        sqlx::query("SET LOCAL plan_cache_mode = force_custom_plan")
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        if !ok_ids.is_empty() {
            let rows = sqlx::query(Q_SUCCEED)
                .bind(ok_ids)
                .bind(ok_attempts)
                .bind(results)
                .fetch_all(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            touched.extend(ids_of(&rows)?);
            lanes.extend(serial::lanes_of(&rows));
            steps.extend(workflow::ended_steps(&rows));
        }
        if !bad_ids.is_empty() {
            let rows = sqlx::query(Q_FAIL)
                .bind(bad_ids)
                .bind(bad_attempts)
                .bind(errors)
                .bind(retry_in)
                .fetch_all(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            touched.extend(ids_of(&rows)?);
            lanes.extend(serial::lanes_of(&rows));
            steps.extend(workflow::ended_steps(&rows));
        }
        serial::advance(&mut *tx, lanes).await?;
        if workflow::finish(&mut *tx, steps).await? > 0 {
            self.wake.work_added();
        }
        if !released.is_empty() {
            let (ids, attempts) = lease_arrays(released.iter().copied());
            let ids: Vec<Uuid> = sqlx::query_scalar(Q_RELEASE)
                .bind(ids)
                .bind(attempts)
                .fetch_all(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            if !ids.is_empty() {
                self.wake.work_added();
            }
            touched.extend(ids);
        }
        if !nap_ids.is_empty() {
            let ids: Vec<Uuid> = sqlx::query_scalar(Q_SNOOZE)
                .bind(nap_ids)
                .bind(nap_attempts)
                .bind(reasons)
                .bind(delays)
                .fetch_all(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            touched.extend(ids);
        }
        Ok((
            missing(completions.iter().map(|c| c.lease), &touched),
            !touched.is_empty(),
        ))
    }

    pub(super) async fn store_progress(&self, lease: Lease, progress: Value) -> BrokerResult<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET progress = $1::json \
             WHERE id = $2 AND attempts = $3 AND state = 'running'",
        )
        .bind(progress.to_string())
        .bind(lease.id.0)
        .bind(i32::try_from(lease.attempt).unwrap_or(i32::MAX))
        .execute(&self.pool)
        .await
        .map_err(from_sqlx)?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn cancel_job(&self, scope: &Scope, id: JobId) -> BrokerResult<Job> {
        let mut tx = self.pool.begin().await.map_err(from_sqlx)?;
        let row = sqlx::query(Q_CANCEL)
            .bind(id.0)
            .bind(scope.tenant())
            .fetch_optional(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        if let Some(row) = &row {
            let rows = std::slice::from_ref(row);
            serial::advance(&mut tx, serial::lanes_of(rows)).await?;
            if workflow::finish(&mut tx, workflow::ended_steps(rows)).await? > 0 {
                self.wake.work_added();
            }
        }
        tx.commit().await.map_err(from_sqlx)?;
        match row {
            Some(row) => codec::job(&row),
            None => Err(self.conflict_or_missing(scope, id).await),
        }
    }

    pub(super) async fn maintain_pass(&self) -> BrokerResult<Maintenance> {
        let mut tx = self.pool.begin().await.map_err(from_sqlx)?;
        let reaped_rows = sqlx::query(Q_REAP)
            .bind(REAP_BATCH)
            .fetch_all(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        serial::advance(&mut tx, serial::lanes_of(&reaped_rows)).await?;
        let released = workflow::finish(&mut tx, workflow::ended_steps(&reaped_rows)).await?;
        serial::repair(&mut tx).await?;
        tx.commit().await.map_err(from_sqlx)?;
        let reaped: Vec<String> = reaped_rows
            .iter()
            .map(|r| r.try_get::<String, _>("state").map_err(from_sqlx))
            .collect::<BrokerResult<_>>()?;
        let mut tx = self.pool.begin().await.map_err(from_sqlx)?;
        let promoted = flow::promote(&mut tx, PROMOTE_BATCH).await?;
        tx.commit().await.map_err(from_sqlx)?;
        let repaired = if self.audits.due() {
            let mut tx = self.pool.begin().await.map_err(from_sqlx)?;
            let found = workflow::audit(&mut tx).await?;
            tx.commit().await.map_err(from_sqlx)?;
            found
        } else {
            0
        };
        if promoted > 0 || released > 0 || repaired > 0 || reaped.iter().any(|s| s == "queued") {
            self.wake.work_added();
        }
        sqlx::query(
            "DELETE FROM workers WHERE id IN (SELECT id FROM workers WHERE expires_at < now_ms() \
             LIMIT 1000 FOR UPDATE SKIP LOCKED)",
        )
        .execute(&self.pool)
        .await
        .map_err(from_sqlx)?;
        super::coord::sweep(&self.pool).await?;
        self.retire().await?;
        let dead = reaped.iter().filter(|s| *s == "failed").count() as u64;
        Ok(Maintenance {
            requeued: reaped.len() as u64 - dead,
            dead,
            promoted,
            repaired,
        })
    }

    /// Deletes finished jobs past their age or beyond the count a queue
    /// keeps, at most [`RETENTION_BATCH`] per queue, outcome and rule per
    /// pass, each batch in its own statement; only when a read finds
    /// something to delete (or a count cap is set).
    async fn retire(&self) -> BrokerResult<()> {
        let queues: Vec<String> = sqlx::query_scalar(Q_FINISHED_QUEUES)
            .fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?;
        if queues.is_empty() {
            return Ok(());
        }
        if self.retention.keep.is_none() {
            let due: bool = sqlx::query_scalar(Q_ANY_RETIRED)
                .bind(&queues)
                .bind(duration_ms(self.retention.shortest()))
                .fetch_one(&self.pool)
                .await
                .map_err(from_sqlx)?;
            if !due {
                return Ok(());
            }
        }
        let batch = RETENTION_BATCH as i64;
        for queue in &queues {
            for state in [JobState::Succeeded, JobState::Failed, JobState::Cancelled] {
                let Some(age) = self.retention.of(state) else {
                    continue;
                };
                sqlx::query(Q_RETIRE_OLD)
                    .bind(queue)
                    .bind(state.as_str())
                    .bind(duration_ms(age))
                    .bind(batch)
                    .execute(&self.pool)
                    .await
                    .map_err(from_sqlx)?;
                if let Some(keep) = self.retention.keep {
                    sqlx::query(Q_RETIRE_EXCESS)
                        .bind(queue)
                        .bind(state.as_str())
                        .bind(i64::try_from(keep).unwrap_or(i64::MAX))
                        .bind(batch)
                        .execute(&self.pool)
                        .await
                        .map_err(from_sqlx)?;
                }
            }
        }
        for state in [JobState::Succeeded, JobState::Failed, JobState::Cancelled] {
            if let Some(age) = self.retention.of(state) {
                workflow::retire(&self.pool, state.as_str(), duration_ms(age), batch).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::conformance::request;
    use crate::broker::postgres::SchemaCleanup;
    use crate::broker::postgres::claim::tests::assert_one_row_per_queue;
    use crate::broker::{Broker, ClaimRequest, Outcome};
    use serde_json::Value;
    use std::time::Duration;

    /// The retention check reads at most one finished job per queue
    /// however many there are, also before statistics catch up.
    #[tokio::test]
    async fn the_retention_check_reads_one_job_per_queue() {
        let Some((broker, _cleanup)) = SchemaCleanup::test_broker(2).await else {
            return;
        };
        let jobs = (0..2_000)
            .map(|_| request("weir.noop", "default"))
            .collect();
        broker.enqueue(jobs).await.expect("enqueue");
        let claimed = broker
            .claim(ClaimRequest {
                worker: "w1".into(),
                queues: vec!["default".into()],
                limit: 2_000,
                lease: Duration::from_secs(30),
                limits: std::sync::Arc::default(),
                tasks: None,
            })
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 2_000);
        let done = claimed
            .iter()
            .map(|c| Completion {
                lease: c.lease,
                outcome: Outcome::Succeeded(Value::Null),
            })
            .collect();
        broker.complete(done).await.expect("complete");
        // A worker's ten default queues.
        let queues: Vec<String> = crate::config::DEFAULT_QUEUES.map(String::from).to_vec();
        assert_one_row_per_queue(
            &broker,
            "the retention check",
            Q_ANY_RETIRED,
            &queues,
            -60_000_i64,
        )
        .await;
    }
}
