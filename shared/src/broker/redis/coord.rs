//! Coordination on Redis: keyed GCRA limiters (`gcra.lua`) and cooldowns
//! (`cool.lua`, read back with PTTL), on Redis's clock.

use super::{RedisBroker, from_redis};
use crate::broker::{BrokerResult, Coordination};
use crate::job::duration_ms;
use crate::limit::{Decision, KeyedRate};
use async_trait::async_trait;
use std::time::Duration;

#[async_trait]
impl Coordination for RedisBroker {
    async fn admit(&self, key: &str, rate: KeyedRate, cost: u32) -> BrokerResult<Decision> {
        let mut conn = self.conn.clone();
        let (allowed, remaining, wait_us): (i64, i64, i64) = self
            .scripts
            .admit
            .arg(&*self.prefix)
            .arg(key)
            .arg(rate.interval_us())
            .arg(rate.burst.max(1))
            .arg(cost)
            .invoke_async(&mut conn)
            .await
            .map_err(from_redis)?;
        Ok(Decision {
            allowed: allowed == 1,
            remaining: u32::try_from(remaining).unwrap_or(0),
            retry_after: Duration::from_micros(u64::try_from(wait_us).unwrap_or(0)),
        })
    }

    async fn cool(&self, key: &str, period: Duration) -> BrokerResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .scripts
            .cool
            .arg(&*self.prefix)
            .arg(key)
            .arg(duration_ms(period).max(1))
            .invoke_async(&mut conn)
            .await
            .map_err(from_redis)?;
        Ok(())
    }

    async fn cooling(&self, keys: &[String]) -> BrokerResult<Vec<Option<Duration>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.pttl(format!("{}:cool:{key}", self.prefix));
        }
        let mut conn = self.conn.clone();
        let left: Vec<i64> = pipe.query_async(&mut conn).await.map_err(from_redis)?;
        Ok(left
            .into_iter()
            .map(|ms| {
                u64::try_from(ms)
                    .ok()
                    .filter(|ms| *ms > 0)
                    .map(Duration::from_millis)
            })
            .collect())
    }

    async fn count(&self, key: &str, by: i64, ttl: Duration) -> BrokerResult<()> {
        let key = format!("{}:cnt:{key}", self.prefix);
        let mut conn = self.conn.clone();
        let _: (i64, i64) = redis::pipe()
            .atomic()
            .incr(&key, by)
            .pexpire(&key, duration_ms(ttl).max(1))
            .query_async(&mut conn)
            .await
            .map_err(from_redis)?;
        Ok(())
    }

    async fn counters(&self, keys: &[String]) -> BrokerResult<Vec<i64>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = keys
            .iter()
            .map(|k| format!("{}:cnt:{k}", self.prefix))
            .collect();
        let mut conn = self.conn.clone();
        let values: Vec<Option<i64>> = redis::cmd("MGET")
            .arg(names)
            .query_async(&mut conn)
            .await
            .map_err(from_redis)?;
        Ok(values.into_iter().map(Option::unwrap_or_default).collect())
    }
}
