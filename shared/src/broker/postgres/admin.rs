//! Operator actions: retry a dead job, pause a queue, purge its waiting
//! jobs, delete finished ones. Each is one statement.

use super::{PostgresBroker, codec, from_sqlx};
use crate::broker::{Admin, BrokerError, BrokerResult, Scope};
use crate::job::{Job, JobId};
use async_trait::async_trait;
use uuid::Uuid;

const Q_RETRY: &str = include_str!("queries/retry.sql");

#[async_trait]
impl Admin for PostgresBroker {
    async fn retry(&self, scope: &Scope, id: JobId) -> BrokerResult<Job> {
        let row = sqlx::query(Q_RETRY)
            .bind(id.0)
            .bind(scope.tenant())
            .fetch_optional(&self.pool)
            .await;
        let row = match row {
            Ok(row) => row,
            // Another unfinished job took the unique key meanwhile.
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                return Err(BrokerError::UniqueKeyHeld { holder: None });
            }
            Err(e) => return Err(from_sqlx(e)),
        };
        match row {
            Some(row) => {
                self.wake.work_added();
                codec::job(&row)
            }
            None => Err(self.conflict_or_missing(scope, id).await),
        }
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> BrokerResult<()> {
        sqlx::query(
            "INSERT INTO queues (name, paused, updated_at) VALUES ($1, $2, now_ms()) \
             ON CONFLICT (name) DO UPDATE SET paused = EXCLUDED.paused, updated_at = EXCLUDED.updated_at",
        )
        .bind(queue)
        .bind(paused)
        .execute(&self.pool)
        .await
        .map_err(from_sqlx)?;
        if !paused {
            self.wake.work_added();
        }
        Ok(())
    }

    async fn purge(&self, queue: &str) -> BrokerResult<u64> {
        let done = sqlx::query(
            "DELETE FROM jobs WHERE queue = $1 AND state IN ('scheduled', 'queued', 'retrying')",
        )
        .bind(queue)
        .execute(&self.pool)
        .await
        .map_err(from_sqlx)?;
        Ok(done.rows_affected())
    }

    async fn delete(&self, scope: &Scope, ids: &[JobId]) -> BrokerResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
        let done = sqlx::query(
            "DELETE FROM jobs WHERE id = ANY ($1::uuid[]) \
             AND ($2::text IS NULL OR tenant = $2) AND state IN ('succeeded', 'failed', 'cancelled')",
        )
        .bind(ids)
        .bind(scope.tenant())
        .execute(&self.pool)
        .await
        .map_err(from_sqlx)?;
        Ok(done.rows_affected())
    }
}
