//! Read models, all from the reader pool (WAL: never blocked by writers).

use super::{JOB_COLUMNS, SqliteBroker, codec, flow, from_sqlx};
use crate::broker::{
    BrokerError, BrokerResult, Inspect, JobPage, LIST_SCAN_LIMIT, ListRequest, Position,
    QueueCounts, Scope,
};
use crate::job::{Job, JobId, JobState, Millis, now_ms};
use crate::limit::{TaskLimit, Usage};
use async_trait::async_trait;

const Q_LIST: &str = include_str!("queries/list.sql");
const Q_LIST_WINDOW: &str = include_str!("queries/list_window.sql");
const Q_LIST_WINDOW_ALL: &str = include_str!("queries/list_window_all.sql");

#[async_trait]
impl Inspect for SqliteBroker {
    async fn get(&self, scope: &Scope, id: JobId) -> BrokerResult<Option<Job>> {
        self.fetch_job(scope, id).await
    }

    async fn list(&self, request: ListRequest) -> BrokerResult<JobPage> {
        let limit = request.limit.max(1);
        // Above every job id (ids are lower-case hex and hyphens).
        let upper = request
            .cursor
            .map_or_else(|| "~".to_owned(), |c| c.to_string());
        let tenant = request.scope.tenant();
        let window = if tenant.is_some() {
            Q_LIST_WINDOW
        } else {
            Q_LIST_WINDOW_ALL
        };
        let (oldest, examined): (Option<String>, i64) = sqlx::query_as(window)
            .bind(tenant)
            .bind(&upper)
            .bind(LIST_SCAN_LIMIT as i64)
            .fetch_one(&self.reader)
            .await
            .map_err(from_sqlx)?;
        let Some(oldest) = oldest else {
            return Ok(JobPage::bounded(Vec::new(), limit, None));
        };
        let rows = sqlx::query(Q_LIST)
            .bind(tenant)
            .bind(request.queue.as_deref())
            .bind(request.state.map(JobState::as_str))
            .bind(request.task.as_deref())
            .bind(&upper)
            .bind(&oldest)
            .bind(i64::try_from(limit + 1).unwrap_or(i64::MAX))
            .fetch_all(&self.reader)
            .await
            .map_err(from_sqlx)?;
        let data = rows
            .iter()
            .map(codec::job)
            .collect::<BrokerResult<Vec<_>>>()?;
        let stopped_at = (examined as usize >= LIST_SCAN_LIMIT)
            .then(|| oldest.parse().ok())
            .flatten();
        Ok(JobPage::bounded(data, limit, stopped_at))
    }

    async fn queue_counts(&self) -> BrokerResult<Vec<QueueCounts>> {
        let paused: Vec<(String, bool)> = sqlx::query_as("SELECT name, paused FROM queues")
            .fetch_all(&self.reader)
            .await
            .map_err(from_sqlx)?;
        let counted: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT queue, state, COUNT(*) FROM jobs GROUP BY queue, state")
                .fetch_all(&self.reader)
                .await
                .map_err(from_sqlx)?;
        QueueCounts::assemble(paused, counted)
    }

    async fn position(&self, job: &Job) -> BrokerResult<Position> {
        flow::position(&self.reader, job).await
    }

    async fn queue_heads(&self, queues: &[String]) -> BrokerResult<Vec<Option<Millis>>> {
        let mut out = Vec::with_capacity(queues.len());
        for queue in queues {
            let due: Option<i64> = sqlx::query_scalar(
                "SELECT MAX(run_at, created_at) FROM jobs \
                 WHERE state = 'queued' AND serial_wait = 0 AND queue = ?1 \
                 ORDER BY priority DESC, seq, id LIMIT 1",
            )
            .bind(queue)
            .fetch_optional(&self.reader)
            .await
            .map_err(from_sqlx)?;
            out.push(due.map(Millis));
        }
        Ok(out)
    }

    async fn usage(&self, task: &str, limit: &TaskLimit) -> BrokerResult<Usage> {
        flow::usage(&self.reader, task, limit, now_ms()).await
    }
}

impl SqliteBroker {
    pub(super) async fn fetch_job(&self, scope: &Scope, id: JobId) -> BrokerResult<Option<Job>> {
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
