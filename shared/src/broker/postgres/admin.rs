//! Operator actions: retry a dead job, pause a queue, purge its waiting
//! jobs, delete finished ones. Each is one statement.

use super::{PostgresBroker, codec, from_sqlx, serial};
use crate::broker::{Admin, BrokerError, BrokerResult, Inspect, Scope};
use crate::job::{Job, JobId};
use async_trait::async_trait;
use sqlx::Row;
use uuid::Uuid;

const Q_RETRY: &str = include_str!("queries/retry.sql");

#[async_trait]
impl Admin for PostgresBroker {
    async fn retry(&self, scope: &Scope, id: JobId) -> BrokerResult<Job> {
        let mut tx = self.pool.begin().await.map_err(from_sqlx)?;
        let row = sqlx::query(Q_RETRY)
            .bind(id.0)
            .bind(scope.tenant())
            .fetch_optional(&mut *tx)
            .await;
        let row = match row {
            Ok(row) => row,
            // Another unfinished job took the unique key meanwhile.
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                return Err(BrokerError::UniqueKeyHeld { holder: None });
            }
            Err(e) => return Err(from_sqlx(e)),
        };
        if let Some(row) = &row
            && let Some(key) = row
                .try_get::<Option<String>, _>("serial_key")
                .map_err(from_sqlx)?
        {
            // The lane moved on: a retried member joins at its tail.
            let id: Uuid = row.try_get("id").map_err(from_sqlx)?;
            let tenant: String = row.try_get("tenant").map_err(from_sqlx)?;
            serial::join(&mut tx, &[(id, (tenant, key))]).await?;
        }
        tx.commit().await.map_err(from_sqlx)?;
        match row {
            Some(row) => {
                self.wake.work_added();
                codec::job(&row)
            }
            None => match self.get(scope, id).await {
                Ok(Some(job)) if job.workflow.is_some() && job.state.is_terminal() => {
                    Err(crate::workflow::retry_the_workflow())
                }
                _ => Err(self.conflict_or_missing(scope, id).await),
            },
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
        let mut tx = self.pool.begin().await.map_err(from_sqlx)?;
        let gone = sqlx::query(
            "DELETE FROM jobs WHERE queue = $1 AND state IN ('scheduled', 'queued', 'retrying') \
             AND workflow_id IS NULL \
             RETURNING tenant, serial_key",
        )
        .bind(queue)
        .fetch_all(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        serial::advance(&mut tx, serial::lanes_of(&gone)).await?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(gone.len() as u64)
    }

    async fn delete(&self, scope: &Scope, ids: &[JobId]) -> BrokerResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
        let done = sqlx::query(
            "DELETE FROM jobs WHERE id = ANY ($1::uuid[]) \
             AND ($2::text IS NULL OR tenant = $2) AND state IN ('succeeded', 'failed', 'cancelled') \
             AND workflow_id IS NULL",
        )
        .bind(ids)
        .bind(scope.tenant())
        .execute(&self.pool)
        .await
        .map_err(from_sqlx)?;
        Ok(done.rows_affected())
    }
}
