//! Schedules as operators see them: the configuration with the broker's
//! record (last fire, its job's state) and the next fire time.

use crate::broker::SharedBroker;
use crate::config::Settings;
use crate::job::{Millis, now_ms};
use crate::schedule::Misfire;

/// A schedule as `weir schedules` and `GET /v1/schedules` show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScheduleView {
    /// Name.
    pub name: String,
    /// Cron expression.
    pub cron: String,
    /// Time zone.
    pub tz: String,
    /// Task each run enqueues.
    pub task: String,
    /// Queue of each run.
    pub queue: String,
    /// `skip` or `catch_up`, with its grace.
    pub misfire: Misfire,
    /// True while paused.
    pub paused: bool,
    /// The latest tick enqueued (RFC 3339).
    pub last_fire: Option<String>,
    /// The next tick (RFC 3339).
    pub next_fire: Option<String>,
    /// The job of the latest tick.
    pub last_job: Option<String>,
    /// Its state now (`None` once it has expired from the broker).
    pub last_state: Option<String>,
}

/// Every configured schedule with what the broker recorded of it.
pub async fn schedule_views(
    broker: &SharedBroker,
    settings: &Settings,
) -> crate::broker::BrokerResult<Vec<ScheduleView>> {
    let names: Vec<String> = settings.schedules.iter().map(|s| s.name.clone()).collect();
    let states = broker.schedule_states(&names).await?;
    let now = now_ms();
    let mut out = Vec::new();
    for (s, state) in settings.schedules.iter().zip(states) {
        let last_state = match state.last_job {
            Some(id) => broker
                .get(&crate::broker::Scope::All, id)
                .await?
                .map(|j| j.state.to_string()),
            None => None,
        };
        out.push(ScheduleView {
            name: s.name.clone(),
            cron: s.cron.clone(),
            tz: s.tz.name().to_owned(),
            task: s.task.clone(),
            queue: s.run_request(settings).queue,
            misfire: s.misfire,
            paused: state.paused,
            last_fire: state.last_fire.map(Millis::to_rfc3339),
            next_fire: s.next_after(now).map(Millis::to_rfc3339),
            last_job: state.last_job.map(|j| j.to_string()),
            last_state,
        });
    }
    Ok(out)
}
