//! The node registry: one row per worker node with its expiry (the
//! server's clock).

use super::{PostgresBroker, from_sqlx};
use crate::broker::{BrokerError, BrokerResult, NodeRegistry};
use crate::job::duration_ms;
use crate::node::WorkerInfo;
use async_trait::async_trait;
use std::time::Duration;

#[async_trait]
impl NodeRegistry for PostgresBroker {
    async fn heartbeat(&self, info: &WorkerInfo, ttl: Duration) -> BrokerResult<()> {
        let body = serde_json::to_string(info)
            .map_err(|e| BrokerError::internal_from("worker info", e))?;
        sqlx::query(
            "INSERT INTO workers (id, info, expires_at) VALUES ($1, $2, now_ms() + $3) \
             ON CONFLICT (id) DO UPDATE SET info = EXCLUDED.info, expires_at = EXCLUDED.expires_at",
        )
        .bind(&info.id)
        .bind(body)
        .bind(duration_ms(ttl))
        .execute(&self.pool)
        .await
        .map_err(from_sqlx)?;
        Ok(())
    }

    async fn remove_worker(&self, id: &str) -> BrokerResult<()> {
        sqlx::query("DELETE FROM workers WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(from_sqlx)?;
        Ok(())
    }

    async fn workers(&self) -> BrokerResult<Vec<WorkerInfo>> {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT info FROM workers WHERE expires_at >= now_ms() ORDER BY id")
                .fetch_all(&self.pool)
                .await
                .map_err(from_sqlx)?;
        rows.iter()
            .map(|r| {
                serde_json::from_str(r).map_err(|e| BrokerError::internal_from("worker info", e))
            })
            .collect()
    }
}
