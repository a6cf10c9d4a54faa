//! The cluster-wide rate limiter: GCRA in one Lua script on the broker's
//! Redis, so every API replica shares each tenant's and key's budget.

use super::from_redis;
use crate::limit::{Decision, LimitError, Rate, RateLimiter};
use async_trait::async_trait;
use redis::Script;
use redis::aio::ConnectionManager;
use std::sync::Arc;
use std::time::Duration;

/// Rate limits kept in Redis under `PREFIX:rl:KEY`.
#[derive(Clone)]
pub struct RedisRateLimiter {
    conn: ConnectionManager,
    prefix: Arc<str>,
    script: Arc<Script>,
}

impl RedisRateLimiter {
    pub(super) fn new(conn: ConnectionManager, prefix: Arc<str>) -> Self {
        RedisRateLimiter {
            conn,
            prefix,
            script: Arc::new(Script::new(include_str!("lua/gcra.lua"))),
        }
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, key: &str, rate: Rate) -> Result<Decision, LimitError> {
        let mut conn = self.conn.clone();
        let (allowed, remaining, retry_ms): (i64, i64, i64) = self
            .script
            .key(format!("{}:rl:{key}", self.prefix))
            .arg(rate.count)
            .arg(u64::try_from(rate.period.as_millis()).unwrap_or(u64::MAX))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| LimitError(from_redis(e).to_string()))?;
        Ok(Decision {
            allowed: allowed == 1,
            remaining: u32::try_from(remaining).unwrap_or(0),
            retry_after: Duration::from_millis(u64::try_from(retry_ms).unwrap_or(0)),
        })
    }
}
