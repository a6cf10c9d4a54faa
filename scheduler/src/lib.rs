//! The cron scheduler (`weir scheduler`, and inside `weir dev`).
//!
//! Every replica runs the same loop: a few times a second it reads what the
//! broker recorded of each schedule (latest tick, paused), works out the
//! ticks that are due since then, and fires them. Firing is the broker's
//! [`Broker::fire`](weir_shared::broker::Broker::fire): the tick is keyed by
//! (schedule, fire time) in the same atomic step as its job, so two
//! replicas firing the same tick enqueue one job. No leader is elected;
//! correctness never rests on a lock, and any replica may die at any time.
//!
//! Missed ticks (no scheduler ran) follow the schedule's misfire policy:
//! `skip` fires only the newest, `catch_up` fires each within its grace.

use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use weir_shared::broker::{SharedBroker, Tick};
use weir_shared::config::Settings;
use weir_shared::job::{Millis, duration_ms, now_ms};
use weir_shared::schedule::{Misfire, Schedule};

/// How often each replica looks for due ticks.
pub const INTERVAL: Duration = Duration::from_millis(250);

/// Most ticks one schedule fires in one pass (a `catch_up` backlog is
/// worked through over several passes).
const MAX_TICKS_PER_PASS: usize = 1000;

pub use weir_shared::schedule::SCHEDULE_TENANT;

/// The ticks of `schedule` to fire now: those after the latest recorded one
/// (or, for a schedule never fired, after this replica started), up to
/// `now`, as the misfire policy allows.
pub fn due_ticks(
    schedule: &Schedule,
    last_fire: Option<Millis>,
    started: Millis,
    now: Millis,
) -> Vec<Millis> {
    let after = last_fire.unwrap_or(started);
    match schedule.misfire {
        Misfire::Skip => schedule
            .latest_until(now)
            .filter(|t| *t > after)
            .into_iter()
            .collect(),
        Misfire::CatchUp { grace } => {
            let horizon = Millis(now.0.saturating_sub(duration_ms(grace)));
            let from = Millis(after.0.max(horizon.0.saturating_sub(1)));
            schedule.ticks(from, now, MAX_TICKS_PER_PASS)
        }
    }
}

/// One pass over every schedule; returns how many ticks this call enqueued.
pub async fn pass(
    broker: &SharedBroker,
    settings: &Settings,
    started: Millis,
) -> weir_shared::broker::BrokerResult<usize> {
    let names: Vec<String> = settings.schedules.iter().map(|s| s.name.clone()).collect();
    let states = broker.schedule_states(&names).await?;
    let now = now_ms();
    let mut fired = 0;
    for (schedule, state) in settings.schedules.iter().zip(states) {
        if state.paused {
            continue;
        }
        for fire_time in due_ticks(schedule, state.last_fire, started, now) {
            let tick = Tick {
                schedule: schedule.name.clone(),
                fire_time,
                job: schedule.run_request(settings),
            };
            if let Some(job) = broker.fire(tick).await? {
                fired += 1;
                settings.count_enqueued(&job);
                tracing::info!(
                    schedule = %schedule.name,
                    fire_time = %fire_time.to_rfc3339(),
                    job = %job.id,
                    "Schedule fired"
                );
                metrics::counter!("weir_schedule_fires_total", "schedule" => schedule.name.clone())
                    .increment(1);
            }
        }
    }
    Ok(fired)
}

/// Runs the scheduler until `shutdown`. Broker errors are logged and the
/// loop goes on: the next pass catches up under the misfire policy.
pub async fn run(broker: SharedBroker, settings: Arc<Settings>, shutdown: CancellationToken) {
    if settings.schedules.is_empty() {
        tracing::info!("No schedules configured; the scheduler idles");
    } else {
        for s in &settings.schedules {
            tracing::info!(
                schedule = %s.name,
                cron = %s.cron,
                tz = %s.tz.name(),
                task = %s.task,
                "Schedule loaded"
            );
        }
    }
    let started = now_ms();
    let mut failures = 0u32;
    loop {
        match pass(&broker, &settings, started).await {
            Ok(_) => {
                if failures > 0 {
                    tracing::info!(failures, "Broker reachable again; scheduling");
                }
                failures = 0;
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, failures, "Scheduler pass failed; retrying");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(INTERVAL) => {},
            () = shutdown.cancelled() => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_shared::schedule::ScheduleSpec;

    fn every_second(misfire: Misfire) -> Schedule {
        Schedule::new(ScheduleSpec {
            misfire,
            ..ScheduleSpec::new("s", "* * * * * *", "weir.noop")
        })
        .expect("valid")
    }

    #[test]
    fn on_time_ticks_fire_one_by_one() {
        let s = every_second(Misfire::Skip);
        let t0 = Millis(1_800_000_000_000);
        assert_eq!(due_ticks(&s, Some(t0), t0, Millis(t0.0 + 400)), []);
        assert_eq!(
            due_ticks(&s, Some(t0), t0, Millis(t0.0 + 1200)),
            [Millis(t0.0 + 1000)]
        );
        // Never fired: from this replica's start.
        assert_eq!(
            due_ticks(&s, None, Millis(t0.0 + 100), Millis(t0.0 + 1100)),
            [Millis(t0.0 + 1000)]
        );
    }

    #[test]
    fn skip_fires_the_newest_missed_tick_only() {
        let s = every_second(Misfire::Skip);
        let t0 = Millis(1_800_000_000_000);
        assert_eq!(
            due_ticks(&s, Some(t0), t0, Millis(t0.0 + 5300)),
            [Millis(t0.0 + 5000)]
        );
    }

    #[test]
    fn catch_up_fires_each_missed_tick_within_the_grace() {
        let s = every_second(Misfire::CatchUp {
            grace: Duration::from_secs(3),
        });
        let t0 = Millis(1_800_000_000_000);
        let due = due_ticks(&s, Some(t0), t0, Millis(t0.0 + 5300));
        assert_eq!(due, [t0.0 + 3000, t0.0 + 4000, t0.0 + 5000].map(Millis));
        let wide = every_second(Misfire::CatchUp {
            grace: Duration::from_secs(60),
        });
        assert_eq!(due_ticks(&wide, Some(t0), t0, Millis(t0.0 + 5300)).len(), 5);
    }
}
