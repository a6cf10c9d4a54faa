//! `GET /v1/jobs/{id}/events`: a server-sent event stream of one job.
//!
//! Events: `state` (the whole job, whenever its state or attempt changes),
//! `progress` (the handler's latest progress value) and `result` (the result,
//! once succeeded). The stream ends after the terminal state, or when the
//! server shuts down. A `ping` comment goes out every 15 s so proxies keep
//! the connection open.
//!
//! However many streams follow a job, one poller per job reads it from the
//! broker ([`Watchers`]), every 50 ms after a change and slowing to once a
//! second while nothing changes, and hands each change to every stream of
//! that job: it works the same whether the worker runs in this process or
//! on another host, and 10,000 streams of one job cost one read a second.
//! Streams are capped in the process and per key (`limits::Streams`).

use crate::error::ApiError;
use crate::limits::StreamPlace;
use crate::openapi::ErrorBody;
use crate::{AppState, Caller};
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use weir_shared::broker::{BrokerError, Scope, SharedBroker};
use weir_shared::job::{Job, JobId, JobState};

const FIRST_POLL: Duration = Duration::from_millis(50);
const SLOWEST_POLL: Duration = Duration::from_secs(1);
const PING_EVERY: Duration = Duration::from_secs(15);

/// Opens the stream; 404 before any event if the job is not the caller's,
/// 429 if the caller or the process has too many streams open.
#[utoipa::path(get, path = "/v1/jobs/{id}/events", tag = "jobs", params(("id" = String, Path, description = "The job id")), responses((status = 200, content_type = "text/event-stream", description = "Server-sent events: the job at each change, until it ends"), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody), (status = 401, body = ErrorBody, description = "No or an unknown API key")))]
pub(crate) async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let place = state.streams.take(&caller.identity)?;
    let job = crate::jobs::visible_job(&state, &caller, &id).await?;
    let follow = Follow {
        seen: state.watchers.watch(&job),
        last: None,
        pending: VecDeque::new(),
        finished: false,
        first: Some(job),
        _place: place,
    };
    let events = futures::stream::unfold(follow, |mut f| async move {
        f.next().await.map(|event| (Ok(event), f))
    })
    .take_until(state.closing.clone().cancelled_owned());
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(PING_EVERY).text("ping")))
}

/// The last look at a job a poller took: `None` once it is gone (purged).
type Seen = Option<Job>;

/// One poller per followed job, shared by all of its streams.
pub(crate) struct Watchers {
    broker: SharedBroker,
    closing: CancellationToken,
    jobs: Mutex<HashMap<JobId, watch::Sender<Seen>>>,
}

impl Watchers {
    /// No job followed yet.
    pub(crate) fn new(broker: SharedBroker, closing: CancellationToken) -> Self {
        Watchers {
            broker,
            closing,
            jobs: Mutex::new(HashMap::new()),
        }
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, watch::Sender<Seen>>> {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Follows `job` (read just now by the caller): joins its poller, or
    /// starts one.
    fn watch(self: &Arc<Self>, job: &Job) -> watch::Receiver<Seen> {
        let mut jobs = self.jobs();
        if let Some(sender) = jobs.get(&job.id) {
            return sender.subscribe();
        }
        let (sender, receiver) = watch::channel(Some(job.clone()));
        jobs.insert(job.id, sender.clone());
        tokio::spawn(self.clone().poll(job.id, sender));
        receiver
    }

    /// Jobs followed now.
    pub(crate) fn followed(&self) -> usize {
        self.jobs().len()
    }

    /// Reads the job until it is terminal or gone, or nobody follows it.
    async fn poll(self: Arc<Self>, id: JobId, sender: watch::Sender<Seen>) {
        let mut wait = FIRST_POLL;
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.closing.cancelled() => break,
            }
            {
                // Under the map's lock: a stream joining now either sees
                // this poller alive or starts a new one.
                let mut jobs = self.jobs();
                if sender.receiver_count() == 0 {
                    jobs.remove(&id);
                    return;
                }
            }
            let seen = match self.broker.get(&Scope::All, id).await {
                Ok(seen) => seen,
                Err(BrokerError::Unavailable(_)) => {
                    wait = SLOWEST_POLL;
                    continue;
                }
                Err(_) => None,
            };
            let over = seen.as_ref().is_none_or(|job| job.state.is_terminal());
            let changed = sender.send_if_modified(|last| {
                let moved = *last != seen;
                *last = seen;
                moved
            });
            if over {
                break;
            }
            wait = if changed {
                FIRST_POLL
            } else {
                (wait * 2).clamp(FIRST_POLL, SLOWEST_POLL)
            };
        }
        self.jobs().remove(&id);
    }
}

/// One stream's state between events.
struct Follow {
    seen: watch::Receiver<Seen>,
    last: Option<Job>,
    pending: VecDeque<Event>,
    finished: bool,
    first: Option<Job>,
    _place: StreamPlace,
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
            let seen = match self.first.take() {
                Some(job) => Some(job),
                None => {
                    // After the poller stops (terminal, gone, shutdown) the
                    // last value is still read once.
                    let open = self.seen.changed().await.is_ok();
                    let seen = self.seen.borrow_and_update().clone();
                    if !open && seen == self.last {
                        self.finished = true;
                        continue;
                    }
                    seen
                }
            };
            let Some(job) = seen else {
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
        self.finished = job.state.is_terminal();
        self.last = Some(job);
    }
}
