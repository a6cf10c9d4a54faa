//! `GET /v1/jobs/{id}/events`: a server-sent event stream of one job.
//!
//! Events: `state` (the whole job, whenever its state or attempt changes),
//! `progress` (the handler's latest progress value) and `result` (the result,
//! once succeeded). The stream ends after the terminal state. A `ping`
//! comment goes out every 15 s so proxies keep the connection open.
//!
//! The stream follows the job by reading it from the broker, starting every
//! 50 ms and slowing to once a second while nothing changes: it works the
//! same whether the worker runs in this process or on another host.

use crate::error::ApiError;
use crate::{AppState, Caller};
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde_json::Value;
use std::convert::Infallible;
use std::time::Duration;
use weir_shared::broker::{BrokerError, Scope, SharedBroker};
use weir_shared::job::{Job, JobId, JobState};

const FIRST_POLL: Duration = Duration::from_millis(50);
const SLOWEST_POLL: Duration = Duration::from_secs(1);
const PING_EVERY: Duration = Duration::from_secs(15);

/// Opens the stream; 404 before any event if the job is not the caller's.
pub(crate) async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let job = crate::jobs::visible_job(&state, &caller, &id).await?;
    let follow = Follow {
        broker: state.broker.clone(),
        scope: caller.scope,
        id: job.id,
        last: None,
        pending: std::collections::VecDeque::new(),
        wait: Duration::ZERO,
        finished: false,
        first: Some(job),
    };
    let events = futures::stream::unfold(follow, |mut f| async move {
        f.next().await.map(|event| (Ok(event), f))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(PING_EVERY).text("ping")))
}

/// The follower's state between events.
struct Follow {
    broker: SharedBroker,
    scope: Scope,
    id: JobId,
    last: Option<Job>,
    pending: std::collections::VecDeque<Event>,
    wait: Duration,
    finished: bool,
    first: Option<Job>,
}

fn json_event(name: &str, value: &impl serde::Serialize) -> Event {
    Event::default()
        .event(name)
        .json_data(value)
        .unwrap_or_else(|_| Event::default().event(name))
}

impl Follow {
    /// The next event, or `None` once the job is finished and all is sent.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.finished {
                return None;
            }
            let job = match self.first.take() {
                Some(job) => Some(job),
                None => {
                    tokio::time::sleep(self.wait).await;
                    match self.broker.get(&self.scope, self.id).await {
                        Ok(job) => job,
                        Err(BrokerError::Unavailable(_)) => {
                            self.wait = SLOWEST_POLL;
                            continue;
                        }
                        Err(_) => None,
                    }
                }
            };
            let Some(job) = job else {
                // Deleted (purged) while followed: nothing more will happen.
                self.finished = true;
                continue;
            };
            self.diff(job);
        }
    }

    /// Queues the events that tell what changed since the last look.
    fn diff(&mut self, job: Job) {
        let before = self.last.as_ref();
        let changed_state =
            before.is_none_or(|b| b.state != job.state || b.attempts != job.attempts);
        let changed_progress =
            job.progress != Value::Null && before.is_none_or(|b| b.progress != job.progress);
        if changed_progress {
            self.pending
                .push_back(json_event("progress", &job.progress));
        }
        if changed_state {
            self.pending.push_back(json_event("state", &job));
            if job.state == JobState::Succeeded {
                self.pending.push_back(json_event("result", &job.result));
            }
        }
        self.wait = if changed_state || changed_progress {
            FIRST_POLL
        } else {
            (self.wait * 2).clamp(FIRST_POLL, SLOWEST_POLL)
        };
        self.finished = job.state.is_terminal();
        self.last = Some(job);
    }
}
