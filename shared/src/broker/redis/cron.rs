//! Fire-once cron ticks: `fire.lua` sets the tick's key and enqueues its
//! job in one script; schedule state is one hash per schedule.

use super::enqueue::{check_names, job_args};
use super::{RedisBroker, codec, from_redis};
use crate::broker::{BrokerResult, CronStore, ScheduleState, Tick};
use crate::job::{Job, JobId, Millis, duration_ms, now_ms};
use async_trait::async_trait;
use redis::AsyncCommands;
use std::collections::HashMap;
use std::time::Duration;

/// How long a fired tick's key is kept: longer than any catch-up grace
/// and clock skew a deployment should have.
const TICK_MEMORY: Duration = Duration::from_secs(24 * 3600);

#[async_trait]
impl CronStore for RedisBroker {
    async fn fire(&self, tick: Tick) -> BrokerResult<Option<Job>> {
        check_names(&tick.job)?;
        let id = JobId::for_tick(&tick.schedule, tick.fire_time);
        let local_now = now_ms();
        let delay = tick
            .job
            .run_at
            .map(|t| (t.0 - local_now.0).max(0))
            .unwrap_or(0);
        let name = format!("{}:{}", tick.schedule.len(), tick.schedule);
        let mut invocation = self.scripts.fire.prepare_invoke();
        invocation
            .key(format!("{}:cron:{name}:{}", self.prefix, tick.fire_time.0))
            .key(format!("{}:sched:{name}", self.prefix))
            .arg(&*self.prefix);
        job_args(&mut invocation, &[(id, delay, &tick.job)]);
        invocation
            .arg(id.to_string())
            .arg(tick.fire_time.0)
            .arg(duration_ms(TICK_MEMORY));
        let mut conn = self.conn.clone();
        let reply: Vec<redis::Value> = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(from_redis)?;
        // Empty: the tick had fired; more than `now`: a unique key held it.
        match reply.as_slice() {
            [now] => Ok(Some(codec::new_job(id, tick.job, codec::int(now)?, delay))),
            _ => Ok(None),
        }
    }

    async fn schedule_states(&self, names: &[String]) -> BrokerResult<Vec<ScheduleState>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for name in names {
            pipe.hgetall(format!("{}:sched:{}:{name}", self.prefix, name.len()));
        }
        let mut conn = self.conn.clone();
        let hashes: Vec<HashMap<String, String>> =
            pipe.query_async(&mut conn).await.map_err(from_redis)?;
        Ok(names
            .iter()
            .zip(hashes)
            .map(|(name, h)| ScheduleState {
                name: name.clone(),
                last_fire: h.get("last_fire").and_then(|v| v.parse().ok()).map(Millis),
                last_job: h.get("last_job").and_then(|v| v.parse().ok()),
                paused: h.get("paused").is_some_and(|v| v == "1"),
            })
            .collect())
    }

    async fn set_schedule_paused(&self, name: &str, paused: bool) -> BrokerResult<()> {
        let mut conn = self.conn.clone();
        let _: () = conn
            .hset(
                format!("{}:sched:{}:{name}", self.prefix, name.len()),
                "paused",
                if paused { "1" } else { "0" },
            )
            .await
            .map_err(from_redis)?;
        Ok(())
    }
}
