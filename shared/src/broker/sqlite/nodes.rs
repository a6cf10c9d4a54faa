//! The node registry: one row per worker node with its expiry.

use super::{SqliteBroker, from_sqlx};
use crate::broker::{BrokerError, BrokerResult, NodeRegistry};
use crate::job::{duration_ms, now_ms};
use crate::node::WorkerInfo;
use async_trait::async_trait;
use std::time::Duration;

#[async_trait]
impl NodeRegistry for SqliteBroker {
    async fn heartbeat(&self, info: &WorkerInfo, ttl: Duration) -> BrokerResult<()> {
        let body = serde_json::to_string(info)
            .map_err(|e| BrokerError::internal_from("worker info", e))?;
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO workers (id, info, expires_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (id) DO UPDATE SET info = excluded.info, expires_at = excluded.expires_at",
        )
        .bind(&info.id)
        .bind(body)
        .bind(now_ms().0.saturating_add(duration_ms(ttl)))
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
            .map(|r| {
                serde_json::from_str(r).map_err(|e| BrokerError::internal_from("worker info", e))
            })
            .collect()
    }
}
