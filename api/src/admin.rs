//! The operator's verbs over HTTP, for admin keys: bulk actions on jobs
//! (`POST /v1/jobs/bulk`), purging a queue, and triggering, pausing and
//! resuming schedules; so a dashboard or an admin console can steer weir
//! without access to the broker. Each is what the same CLI command does.

use crate::error::ApiError;
use crate::input::json_body;
use crate::openapi::ErrorBody;
use crate::{AppState, Caller};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::DateTime;
use serde::Deserialize;
use serde_json::{Value, json};
use std::str::FromStr;
use weir_shared::bulk::{BulkAction, BulkOutcome, BulkRequest};
use weir_shared::job::{JobId, JobState, Millis};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkBody {
    action: String,
    queue: String,
    state: Option<String>,
    task: Option<String>,
    tenant: Option<String>,
    after: Option<String>,
    before: Option<String>,
    #[serde(default)]
    dry_run: bool,
    limit: Option<usize>,
    cursor: Option<String>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::invalid("invalid_field", message)
}

fn time(field: &str, text: Option<String>) -> Result<Option<Millis>, ApiError> {
    text.map(|t| {
        DateTime::parse_from_rfc3339(&t)
            .map(|d| Millis(d.timestamp_millis()))
            .map_err(|e| invalid(format!("{field} is not an RFC 3339 time: {e}")))
    })
    .transpose()
}

/// `POST /v1/jobs/bulk` (admin): one step of a bulk action; follow
/// `next_cursor` while `has_more`.
#[utoipa::path(post, path = "/v1/jobs/bulk", tag = "admin", request_body = serde_json::Value, responses((status = 200, body = serde_json::Value, description = "Counts and a cursor"), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody, description = "No or an unknown API key")))]
pub(crate) async fn bulk(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BulkOutcome>, ApiError> {
    caller.require_admin()?;
    let body: BulkBody =
        weir_shared::input::typed(json_body(body)?).map_err(ApiError::bad_request)?;
    if !state.settings.declared_queues.contains(&body.queue) {
        return Err(ApiError::invalid(
            "unknown_queue",
            format!("unknown queue `{}`", weir_shared::input::shown(&body.queue)),
        ));
    }
    let request = BulkRequest {
        action: BulkAction::from_str(&body.action).map_err(invalid)?,
        queue: body.queue,
        state: body
            .state
            .as_deref()
            .map(JobState::from_str)
            .transpose()
            .map_err(invalid)?,
        task: body.task,
        tenant: body.tenant,
        after: time("after", body.after)?,
        before: time("before", body.before)?,
        dry_run: body.dry_run,
        limit: body.limit.unwrap_or(1000),
        cursor: body
            .cursor
            .map(|c| JobId::from_str(&c))
            .transpose()
            .map_err(|_| invalid("cursor is not a job id; pass next_cursor back as it came"))?,
    };
    request.state().map_err(invalid)?;
    let outcome = weir_shared::bulk::run(state.broker.as_ref(), &request).await?;
    tracing::info!(action = %request.action, queue = %request.queue, dry_run = request.dry_run,
        matched = outcome.matched, done = outcome.done, "Bulk action");
    Ok(Json(outcome))
}

/// `POST /v1/queues/{name}/purge` (admin): deletes the queue's waiting jobs.
#[utoipa::path(post, path = "/v1/queues/{name}/purge", tag = "admin", params(("name" = String, Path, description = "The queue")), responses((status = 200, body = serde_json::Value, description = "How many waiting jobs were deleted"), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody, description = "No or an unknown API key")))]
pub(crate) async fn purge(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    if !state.settings.declared_queues.contains(&name) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("unknown queue `{}`", weir_shared::input::shown(&name)),
        ));
    }
    let purged = state.broker.purge(&name).await?;
    tracing::info!(queue = %name, purged, "Queue purged");
    Ok(Json(json!({"queue": name, "purged": purged})))
}

fn schedule<'a>(
    state: &'a AppState,
    name: &str,
) -> Result<&'a weir_shared::schedule::Schedule, ApiError> {
    state
        .settings
        .schedules
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("unknown schedule `{}`", weir_shared::input::shown(name)),
            )
        })
}

/// `POST /v1/schedules/{name}/trigger` (admin): one run now; 201 and the job.
#[utoipa::path(post, path = "/v1/schedules/{name}/trigger", tag = "admin", params(("name" = String, Path, description = "The schedule")), responses((status = 201, body = serde_json::Value, description = "One run now"), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody, description = "No or an unknown API key")))]
pub(crate) async fn trigger(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require_admin()?;
    let request = schedule(&state, &name)?.run_request(&state.settings);
    let mut out = state.broker.enqueue(vec![request]).await?;
    let job = out
        .pop()
        .ok_or_else(|| {
            ApiError::from(weir_shared::broker::BrokerError::internal(
                "enqueue returned nothing",
            ))
        })?
        .job;
    Ok((StatusCode::CREATED, Json(json!(job))))
}

async fn set_schedule_paused(
    state: &AppState,
    name: &str,
    paused: bool,
) -> Result<Json<Value>, ApiError> {
    schedule(state, name)?;
    state.broker.set_schedule_paused(name, paused).await?;
    tracing::info!(schedule = %name, paused, "Schedule paused flag changed");
    Ok(Json(json!({"schedule": name, "paused": paused})))
}

/// `POST /v1/schedules/{name}/pause` (admin).
#[utoipa::path(post, path = "/v1/schedules/{name}/pause", tag = "admin", params(("name" = String, Path, description = "The schedule")), responses((status = 200, body = serde_json::Value), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody, description = "No or an unknown API key")))]
pub(crate) async fn pause_schedule(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    set_schedule_paused(&state, &name, true).await
}

/// `POST /v1/schedules/{name}/resume` (admin).
#[utoipa::path(post, path = "/v1/schedules/{name}/resume", tag = "admin", params(("name" = String, Path, description = "The schedule")), responses((status = 200, body = serde_json::Value), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody, description = "No or an unknown API key")))]
pub(crate) async fn resume_schedule(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    set_schedule_paused(&state, &name, false).await
}
