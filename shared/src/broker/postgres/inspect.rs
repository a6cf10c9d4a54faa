//! Read models: plain reads, never a lock.

use super::{JOB_COLUMNS, PostgresBroker, codec, flow, from_sqlx};
use crate::broker::{
    BackendHealth, BrokerError, BrokerResult, Inspect, JobPage, LIST_SCAN_LIMIT, ListRequest,
    Position, QueueCounts, Scope,
};
use crate::job::{Job, JobId, JobState, Millis};
use crate::limit::{TaskLimit, Usage};
use async_trait::async_trait;
use std::time::Duration;
use uuid::Uuid;

#[async_trait]
impl Inspect for PostgresBroker {
    async fn get(&self, scope: &Scope, id: JobId) -> BrokerResult<Option<Job>> {
        self.fetch_job(scope, id).await
    }

    async fn list(&self, request: ListRequest) -> BrokerResult<JobPage> {
        let limit = request.limit.max(1);
        let upper = request.cursor.map_or(Uuid::max(), |c| c.0);
        let tenant = request.scope.tenant();
        // The window a listing examines: the newest LIST_SCAN_LIMIT jobs
        // (of the tenant, or of everyone) older than the cursor.
        // Two statements, so each plan uses its index (jobs_tenant, or the
        // primary key).
        let window = if tenant.is_some() {
            "WITH w AS MATERIALIZED (SELECT id FROM jobs WHERE tenant = $1 AND id < $2 \
             ORDER BY id DESC LIMIT $3) \
             SELECT (SELECT id FROM w ORDER BY id LIMIT 1), (SELECT count(*) FROM w)"
        } else {
            "WITH w AS MATERIALIZED (SELECT id FROM jobs WHERE $1::text IS NULL AND id < $2 \
             ORDER BY id DESC LIMIT $3) \
             SELECT (SELECT id FROM w ORDER BY id LIMIT 1), (SELECT count(*) FROM w)"
        };
        let (oldest, examined): (Option<Uuid>, i64) = sqlx::query_as(window)
            .bind(tenant)
            .bind(upper)
            .bind(LIST_SCAN_LIMIT as i64)
            .fetch_one(&self.pool)
            .await
            .map_err(from_sqlx)?;
        let Some(oldest) = oldest else {
            return Ok(JobPage::bounded(Vec::new(), limit, None));
        };
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs \
             WHERE id < $5 AND id >= $6 \
               AND ($1::text IS NULL OR tenant = $1) AND ($2::text IS NULL OR queue = $2) \
               AND ($3::text IS NULL OR state = $3) AND ($4::text IS NULL OR task = $4) \
             ORDER BY id DESC LIMIT $7"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(request.queue.as_deref())
            .bind(request.state.map(JobState::as_str))
            .bind(request.task.as_deref())
            .bind(upper)
            .bind(oldest)
            .bind(i64::try_from(limit + 1).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?;
        let data = rows
            .iter()
            .map(codec::job)
            .collect::<BrokerResult<Vec<_>>>()?;
        let stopped_at = (examined as usize >= LIST_SCAN_LIMIT).then_some(JobId(oldest));
        Ok(JobPage::bounded(data, limit, stopped_at))
    }

    async fn queue_counts(&self) -> BrokerResult<Vec<QueueCounts>> {
        let paused: Vec<(String, bool)> = sqlx::query_as("SELECT name, paused FROM queues")
            .fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?;
        let counted: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT queue, state, count(*) FROM jobs GROUP BY queue, state")
                .fetch_all(&self.pool)
                .await
                .map_err(from_sqlx)?;
        QueueCounts::assemble(paused, counted)
    }

    async fn position(&self, job: &Job) -> BrokerResult<Position> {
        flow::position(&self.pool, job).await
    }

    async fn queue_heads(&self, queues: &[String]) -> BrokerResult<Vec<Option<Millis>>> {
        let mut out = Vec::with_capacity(queues.len());
        for queue in queues {
            let due: Option<i64> = sqlx::query_scalar(
                "SELECT greatest(run_at, created_at) FROM jobs \
                 WHERE state = 'queued' AND NOT serial_wait AND queue = $1 \
                 ORDER BY priority DESC, seq, id LIMIT 1",
            )
            .bind(queue)
            .fetch_optional(&self.pool)
            .await
            .map_err(from_sqlx)?;
            out.push(due.map(Millis));
        }
        Ok(out)
    }

    async fn usage(&self, task: &str, limit: &TaskLimit) -> BrokerResult<Usage> {
        flow::usage(&self.pool, task, limit).await
    }

    async fn backend_health(&self) -> BrokerResult<BackendHealth> {
        // Sessions of this database that hold back vacuum's horizon: a
        // snapshot held (a repeatable-read transaction, a running query)
        // or a transaction id taken (one that wrote), this read's own
        // included (it is a moment old). Vacuum ignores other vacuums.
        // Other roles' sessions are visible only to a role with
        // pg_read_all_stats; without it they read as none.
        let seconds: Option<f64> = sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM (clock_timestamp() - min(xact_start)))::float8 \
             FROM pg_stat_activity \
             WHERE datname = current_database() \
               AND backend_type <> 'autovacuum worker' \
               AND (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL)",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(from_sqlx)?;
        Ok(BackendHealth {
            oldest_transaction: Some(Duration::from_secs_f64(seconds.unwrap_or(0.0).max(0.0))),
        })
    }
}

impl PostgresBroker {
    pub(super) async fn fetch_job(&self, scope: &Scope, id: JobId) -> BrokerResult<Option<Job>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.0)
            .bind(scope.tenant())
            .fetch_optional(&self.pool)
            .await
            .map_err(from_sqlx)?;
        row.as_ref().map(codec::job).transpose()
    }

    /// The state a job is in, for the 409 of a refused cancel or retry.
    pub(super) async fn conflict_or_missing(&self, scope: &Scope, id: JobId) -> BrokerError {
        match self.fetch_job(scope, id).await {
            Ok(Some(job)) => BrokerError::Conflict(job.state),
            Ok(None) => BrokerError::NotFound,
            Err(e) => e,
        }
    }
}
