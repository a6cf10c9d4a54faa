//! Fire-once cron ticks: a `cron_fires` row keyed by (schedule, fire
//! time) inserted in the same transaction as the tick's job.

use super::{SqliteBroker, enqueue, from_sqlx};
use crate::broker::{BrokerResult, CronStore, ScheduleState, Tick};
use crate::job::{Job, JobId, now_ms};
use async_trait::async_trait;

#[async_trait]
impl CronStore for SqliteBroker {
    async fn fire(&self, tick: Tick) -> BrokerResult<Option<Job>> {
        let now = now_ms();
        let id = JobId::for_tick(&tick.schedule, tick.fire_time);
        let run_at = tick.job.run_at.unwrap_or(now);
        let job = tick.job.into_job(id, now, run_at);
        let mut tx = self.begin().await?;
        let fresh = sqlx::query(
            "INSERT INTO cron_fires (schedule, fire_time, job_id) VALUES (?1, ?2, ?3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&tick.schedule)
        .bind(tick.fire_time.0)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?
        .rows_affected()
            == 1;
        if !fresh {
            tx.commit().await.map_err(from_sqlx)?;
            return Ok(None);
        }
        let mut done = enqueue::insert_in(&mut tx, vec![job], now).await?;
        sqlx::query(
            "INSERT INTO schedules (name, last_fire, last_job) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO UPDATE SET last_fire = excluded.last_fire, last_job = excluded.last_job \
             WHERE schedules.last_fire IS NULL OR schedules.last_fire < excluded.last_fire",
        )
        .bind(&tick.schedule)
        .bind(tick.fire_time.0)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)?;
        self.work.notify_waiters();
        Ok(done.pop().filter(|e| e.created).map(|e| e.job))
    }

    async fn schedule_states(&self, names: &[String]) -> BrokerResult<Vec<ScheduleState>> {
        let rows: Vec<(String, Option<i64>, Option<String>, i64)> = sqlx::query_as(
            "SELECT name, last_fire, last_job, paused FROM schedules \
             WHERE name IN (SELECT value FROM json_each(?1))",
        )
        .bind(serde_json::to_string(names).unwrap_or_default())
        .fetch_all(&self.reader)
        .await
        .map_err(from_sqlx)?;
        let known: std::collections::HashMap<String, ScheduleState> = rows
            .into_iter()
            .map(|(name, last_fire, last_job, paused)| {
                (
                    name.clone(),
                    ScheduleState {
                        name,
                        last_fire: last_fire.map(crate::job::Millis),
                        last_job: last_job.and_then(|j| j.parse().ok()),
                        paused: paused == 1,
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
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO schedules (name, paused) VALUES (?1, ?2) \
             ON CONFLICT (name) DO UPDATE SET paused = excluded.paused",
        )
        .bind(name)
        .bind(i64::from(paused))
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)
    }
}
