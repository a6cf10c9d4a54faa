//! The node registry: one expiring key per worker node, listed in a set.

use super::{RedisBroker, from_redis};
use crate::broker::{BrokerError, BrokerResult, NodeRegistry};
use crate::job::duration_ms;
use crate::node::WorkerInfo;
use async_trait::async_trait;
use redis::AsyncCommands;
use std::time::Duration;

#[async_trait]
impl NodeRegistry for RedisBroker {
    async fn heartbeat(&self, info: &WorkerInfo, ttl: Duration) -> BrokerResult<()> {
        let body = serde_json::to_string(info)
            .map_err(|e| BrokerError::internal_from("worker info", e))?;
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .pset_ex(
                self.key(&format!("worker:{}", info.id)),
                body,
                u64::try_from(duration_ms(ttl)).unwrap_or(u64::MAX),
            )
            .ignore()
            .zadd(self.key("workers"), &info.id, 0)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(from_redis)
    }

    async fn remove_worker(&self, id: &str) -> BrokerResult<()> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .del(self.key(&format!("worker:{id}")))
            .ignore()
            .zrem(self.key("workers"), id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(from_redis)
    }

    async fn workers(&self) -> BrokerResult<Vec<WorkerInfo>> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn
            .zrange(self.key("workers"), 0, -1)
            .await
            .map_err(from_redis)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids
            .iter()
            .map(|id| self.key(&format!("worker:{id}")))
            .collect();
        let bodies: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .map_err(from_redis)?;
        let mut out = Vec::new();
        let mut expired = Vec::new();
        for (id, body) in ids.into_iter().zip(bodies) {
            match body {
                Some(body) => out.push(
                    serde_json::from_str(&body)
                        .map_err(|e| BrokerError::internal_from("worker info", e))?,
                ),
                None => expired.push(id),
            }
        }
        if !expired.is_empty() {
            let _: redis::RedisResult<i64> = conn.zrem(self.key("workers"), expired).await;
        }
        Ok(out)
    }
}
