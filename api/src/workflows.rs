//! `/v1/workflows`: submit a DAG of steps, show, list, cancel, retry, and
//! follow it as server-sent events.
//!
//! The event stream is built from state, not from a log: it reads the
//! workflow, sends a `step` event for every step as it stands, then one per
//! change it sees, polling every 100 ms while steps move and slowing to
//! once a second while nothing does, and ends with a `workflow` event at the
//! terminal state. A late or reconnecting subscriber misses nothing, and any
//! API replica serves it.

use crate::error::ApiError;
use crate::input::json_body;
use crate::openapi::{ErrorBody, WorkflowSubmission};
use crate::{AppState, Caller};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::str::FromStr;
use std::time::Duration;
use weir_shared::broker::{BrokerError, Scope, SharedBroker};
use weir_shared::input::workflow_request;
use weir_shared::job::{JobId, JobState};
use weir_shared::workflow::{Workflow, WorkflowListRequest, WorkflowPage, WorkflowState};

/// Default and largest page sizes of `GET /v1/workflows`.
const DEFAULT_PAGE: usize = 20;
const MAX_PAGE: usize = 100;
const FIRST_POLL: Duration = Duration::from_millis(100);
const SLOWEST_POLL: Duration = Duration::from_secs(1);
const PING_EVERY: Duration = Duration::from_secs(15);

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "workflow not found")
}

fn parse_id(text: &str) -> Result<JobId, ApiError> {
    JobId::from_str(text).map_err(|_| not_found())
}

/// `POST /v1/workflows`: 201 with the workflow, every step stored.
#[utoipa::path(post, path = "/v1/workflows", tag = "workflows", request_body = WorkflowSubmission, responses((status = 201, body = Workflow, description = "Every step stored: roots queued, the rest waiting"), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody, description = "A cycle, an unknown parent, a duplicate id, a bad step: named; nothing enqueued"), (status = 401, body = ErrorBody, description = "No or an unknown API key"), (status = 503, body = ErrorBody)))]
pub(crate) async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Workflow>), ApiError> {
    let request = workflow_request(state.catalog(), &caller.tenant, json_body(body)?)?;
    let counted: Vec<(String, String)> = request
        .steps
        .iter()
        .map(|s| (s.job.queue.clone(), s.job.task.clone()))
        .collect();
    let workflow = state.broker.submit_workflow(request).await?;
    for (queue, task) in &counted {
        state.settings.count_enqueued_as(queue, task);
    }
    Ok((StatusCode::CREATED, Json(workflow)))
}

/// `GET /v1/workflows/{id}`.
#[utoipa::path(get, path = "/v1/workflows/{id}", tag = "workflows", params(("id" = String, Path, description = "The workflow id")), responses((status = 200, body = Workflow), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody, description = "No or an unknown API key")))]
pub(crate) async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Workflow>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(state.broker.get_workflow(&caller.scope, id).await?))
}

/// Query string of `GET /v1/workflows`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    state: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /v1/workflows`: newest first, with a cursor.
#[utoipa::path(get, path = "/v1/workflows", tag = "workflows", params(ListQuery), responses((status = 200, body = WorkflowPage), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody, description = "No or an unknown API key")))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<WorkflowPage>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = crate::input::page_limit(q.limit.as_deref(), DEFAULT_PAGE, MAX_PAGE)?;
    let wanted = q
        .state
        .filter(|s| !s.is_empty())
        .map(|s| WorkflowState::from_str(&s))
        .transpose()
        .map_err(|e| ApiError::invalid("invalid_field", e))?;
    let cursor = crate::input::page_cursor(q.cursor, "workflow")?;
    let page = state
        .broker
        .list_workflows(WorkflowListRequest {
            scope: caller.scope,
            state: wanted,
            limit,
            cursor,
        })
        .await?;
    Ok(Json(page))
}

/// `DELETE /v1/workflows/{id}`: cancels every unfinished step.
#[utoipa::path(delete, path = "/v1/workflows/{id}", tag = "workflows", params(("id" = String, Path, description = "The workflow id")), responses((status = 200, body = Workflow, description = "Cancelled"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "It had ended"), (status = 401, body = ErrorBody, description = "No or an unknown API key")))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Workflow>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(state.broker.cancel_workflow(&caller.scope, id).await?))
}

/// `POST /v1/workflows/{id}/retry`: the failed and cancelled steps again.
#[utoipa::path(post, path = "/v1/workflows/{id}/retry", tag = "workflows", params(("id" = String, Path, description = "The workflow id")), responses((status = 200, body = Workflow, description = "Failed and cancelled steps put back; succeeded steps keep their results"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "Still running, or nothing failed or was cancelled"), (status = 401, body = ErrorBody, description = "No or an unknown API key")))]
pub(crate) async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Workflow>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(state.broker.retry_workflow(&caller.scope, id).await?))
}

/// `GET /v1/workflows/{id}/events`.
#[utoipa::path(get, path = "/v1/workflows/{id}/events", tag = "workflows", params(("id" = String, Path, description = "The workflow id")), responses((status = 200, content_type = "text/event-stream", description = "`step` events ({step, job_id, state}) for every step, then at each change; a final `workflow` event ({id, state})"), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody), (status = 401, body = ErrorBody, description = "No or an unknown API key")))]
pub(crate) async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let place = state.streams.take(&caller.identity)?;
    let id = parse_id(&id)?;
    let first = state.broker.get_workflow(&caller.scope, id).await?;
    let follow = Follow {
        broker: state.broker.clone(),
        scope: caller.scope,
        id,
        seen: HashMap::new(),
        pending: VecDeque::new(),
        first: Some(first),
        wait: FIRST_POLL,
        done: false,
        _place: place,
    };
    let events = futures::stream::unfold(follow, |mut f| async move {
        f.next().await.map(|event| (Ok(event), f))
    })
    .take_until(state.closing.clone().cancelled_owned());
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(PING_EVERY).text("ping")))
}

/// One stream's state between events.
struct Follow {
    broker: SharedBroker,
    scope: Scope,
    id: JobId,
    /// Each step's state as last sent.
    seen: HashMap<JobId, JobState>,
    pending: VecDeque<Event>,
    first: Option<Workflow>,
    wait: Duration,
    done: bool,
    _place: crate::limits::StreamPlace,
}

fn event(name: &str, data: serde_json::Value) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|_| Event::default().event(name))
}

impl Follow {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            if self.done {
                return None;
            }
            let workflow = match self.first.take() {
                Some(w) => w,
                None => {
                    tokio::time::sleep(self.wait).await;
                    match self.broker.get_workflow(&self.scope, self.id).await {
                        Ok(w) => w,
                        Err(BrokerError::WorkflowNotFound) => {
                            // Gone (retention) while followed: nothing more.
                            self.done = true;
                            continue;
                        }
                        Err(_) => {
                            self.wait = SLOWEST_POLL;
                            continue;
                        }
                    }
                }
            };
            self.diff(&workflow);
        }
    }

    /// Queues a `step` event per step whose state changed, and the final
    /// `workflow` event once it ended.
    fn diff(&mut self, workflow: &Workflow) {
        let mut moved = false;
        for s in &workflow.steps {
            if self.seen.get(&s.job_id) != Some(&s.state) {
                self.seen.insert(s.job_id, s.state);
                moved = true;
                self.pending.push_back(event(
                    "step",
                    json!({"step": s.id, "job_id": s.job_id, "state": s.state}),
                ));
            }
        }
        if workflow.state != WorkflowState::Running {
            self.pending.push_back(event(
                "workflow",
                json!({"id": workflow.id, "state": workflow.state}),
            ));
            self.done = true;
        }
        self.wait = if moved {
            FIRST_POLL
        } else {
            (self.wait * 2).clamp(FIRST_POLL, SLOWEST_POLL)
        };
    }
}
