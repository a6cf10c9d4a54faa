//! Fire-once cron ticks: a `cron_fires` row keyed by (schedule, fire
//! time) inserted in the same transaction as the tick's job. Replicas
//! racing on one tick wait on the row's key; one inserts, the others see
//! the conflict and enqueue nothing.

use super::{PostgresBroker, enqueue, from_sqlx};
use crate::broker::{BrokerResult, CronStore, ScheduleState, Tick};
use crate::job::{Job, JobId, JobState, Millis, now_ms};
use async_trait::async_trait;
use std::collections::HashMap;
use uuid::Uuid;

#[async_trait]
impl CronStore for PostgresBroker {
    async fn fire(&self, tick: Tick) -> BrokerResult<Option<Job>> {
        let now = now_ms();
        let id = JobId::for_tick(&tick.schedule, tick.fire_time);
        let run_at = tick.job.run_at.unwrap_or(now);
        let job = tick.job.into_job(id, now, run_at);
        let mut tx = self.pool.begin().await.map_err(from_sqlx)?;
        let fresh = sqlx::query(
            "INSERT INTO cron_fires (schedule, fire_time, job_id) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&tick.schedule)
        .bind(tick.fire_time.0)
        .bind(id.0)
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?
        .rows_affected()
            == 1;
        if !fresh {
            tx.commit().await.map_err(from_sqlx)?;
            return Ok(None);
        }
        let mut done = enqueue::insert_in(&mut tx, vec![job]).await?;
        sqlx::query(
            "INSERT INTO schedules AS s (name, last_fire, last_job) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET last_fire = EXCLUDED.last_fire, last_job = EXCLUDED.last_job \
             WHERE s.last_fire IS NULL OR s.last_fire < EXCLUDED.last_fire",
        )
        .bind(&tick.schedule)
        .bind(tick.fire_time.0)
        .bind(id.0)
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)?;
        let fired = done.pop().filter(|e| e.created).map(|e| e.job);
        if fired.as_ref().is_some_and(|j| j.state == JobState::Queued) {
            self.wake.work_added();
        }
        Ok(fired)
    }

    async fn schedule_states(&self, names: &[String]) -> BrokerResult<Vec<ScheduleState>> {
        let rows: Vec<(String, Option<i64>, Option<Uuid>, bool)> = sqlx::query_as(
            "SELECT name, last_fire, last_job, paused FROM schedules WHERE name = ANY ($1::text[])",
        )
        .bind(names)
        .fetch_all(&self.pool)
        .await
        .map_err(from_sqlx)?;
        let known: HashMap<String, ScheduleState> = rows
            .into_iter()
            .map(|(name, last_fire, last_job, paused)| {
                (
                    name.clone(),
                    ScheduleState {
                        name,
                        last_fire: last_fire.map(Millis),
                        last_job: last_job.map(JobId),
                        paused,
                    },
                )
            })
            .collect();
        Ok(names
            .iter()
            .map(|n| {
                known.get(n).cloned().unwrap_or(ScheduleState {
                    name: n.clone(),
                    last_fire: None,
                    last_job: None,
                    paused: false,
                })
            })
            .collect())
    }

    async fn set_schedule_paused(&self, name: &str, paused: bool) -> BrokerResult<()> {
        sqlx::query(
            "INSERT INTO schedules (name, paused) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET paused = EXCLUDED.paused",
        )
        .bind(name)
        .bind(paused)
        .execute(&self.pool)
        .await
        .map_err(from_sqlx)?;
        Ok(())
    }
}
