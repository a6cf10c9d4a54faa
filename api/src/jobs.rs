//! `/v1/jobs`: enqueue (one or a batch), show, list, cancel, retry.

use crate::error::ApiError;
use crate::input::{batch_request, json_body};
use crate::openapi::{BatchIds, BatchSubmission, ErrorBody, JobSubmission};
use crate::{AppState, Caller};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use std::str::FromStr;
use weir_shared::broker::{JobPage, ListRequest};
use weir_shared::input::job_request;
use weir_shared::job::{Job, JobId, JobState};

/// Default and largest page sizes of `GET /v1/jobs`.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

/// A job id from the path; anything that is not an id names no job.
pub(crate) fn parse_id(text: &str) -> Result<JobId, ApiError> {
    JobId::from_str(text).map_err(|_| ApiError::job_not_found())
}

/// `POST /v1/jobs`: 201 with the new job, or 200 with the unfinished job
/// that already holds its unique key.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = JobSubmission, responses((status = 201, body = Job, description = "Enqueued"), (status = 200, body = Job, description = "An unfinished job of the task already holds the unique key"), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody, description = "No or an unknown API key"), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn enqueue(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    let request = job_request(state.catalog(), &caller.tenant, json_body(body)?, "")?;
    let mut out = state.broker.enqueue(vec![request]).await?;
    let enqueued = out.pop().ok_or_else(|| {
        ApiError::from(weir_shared::broker::BrokerError::internal(
            "enqueue returned nothing",
        ))
    })?;
    let status = if enqueued.created {
        state.settings.count_enqueued(&enqueued.job);
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(enqueued.job)))
}

/// `POST /v1/jobs/batch`: all jobs or none.
#[utoipa::path(post, path = "/v1/jobs/batch", tag = "jobs", request_body = BatchSubmission, responses((status = 201, body = BatchIds, description = "Every job enqueued, or none"), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody, description = "No or an unknown API key")))]
pub(crate) async fn enqueue_batch(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let requests = batch_request(state.catalog(), &caller.tenant, json_body(body)?)?;
    let out = state.broker.enqueue(requests).await?;
    for e in out.iter().filter(|e| e.created) {
        state.settings.count_enqueued(&e.job);
    }
    let ids: Vec<JobId> = out.iter().map(|e| e.job.id).collect();
    Ok((StatusCode::CREATED, Json(json!({"ids": ids}))))
}

/// The job a path names, if the caller may see it; 404 otherwise.
pub(crate) async fn visible_job(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<Job, ApiError> {
    let id = parse_id(id)?;
    state
        .broker
        .get(&caller.scope, id)
        .await?
        .ok_or_else(ApiError::job_not_found)
}

/// `GET /v1/jobs/{id}`.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "The job id")), responses((status = 200, body = Job), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody, description = "No or an unknown API key")))]
pub(crate) async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    visible_job(&state, &caller, &id).await.map(Json)
}

/// `GET /v1/jobs/{id}/explain`: why the job is not running.
#[utoipa::path(get, path = "/v1/jobs/{id}/explain", tag = "jobs", params(("id" = String, Path, description = "The job id")), responses((status = 200, body = serde_json::Value, description = "Why the job is not running"), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody, description = "No or an unknown API key")))]
pub(crate) async fn explain(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<weir_shared::inspect::Explanation>, ApiError> {
    let job = visible_job(&state, &caller, &id).await?;
    let why = weir_shared::inspect::explain(
        state.broker.as_ref(),
        &job,
        &state.settings.limits,
        &caller.scope,
    )
    .await?;
    Ok(Json(why))
}

/// Query string of `GET /v1/jobs`; everything a string so that a bad value
/// gets a message naming it.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    queue: Option<String>,
    state: Option<String>,
    task: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /v1/jobs`: newest first, with a cursor.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(ListQuery), responses((status = 200, body = JobPage), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody, description = "No or an unknown API key")))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JobPage>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = crate::input::page_limit(q.limit.as_deref(), DEFAULT_PAGE, MAX_PAGE)?;
    let job_state = q
        .state
        .filter(|s| !s.is_empty())
        .map(|s| JobState::from_str(&s))
        .transpose()
        .map_err(|e| ApiError::invalid("invalid_field", e))?;
    let cursor = crate::input::page_cursor(q.cursor, "job")?;
    let page = state
        .broker
        .list(ListRequest {
            scope: caller.scope,
            queue: q.queue.filter(|s| !s.is_empty()),
            state: job_state,
            task: q.task.filter(|s| !s.is_empty()),
            limit,
            cursor,
        })
        .await?;
    Ok(Json(page))
}

/// `DELETE /v1/jobs/{id}`: cancels; 409 when already finished.
#[utoipa::path(delete, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "The job id")), responses((status = 200, body = Job, description = "Cancelled"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "Already finished"), (status = 401, body = ErrorBody, description = "No or an unknown API key")))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(state.broker.cancel(&caller.scope, id).await?))
}

/// `POST /v1/jobs/{id}/retry`: only from `failed` or `cancelled`.
#[utoipa::path(post, path = "/v1/jobs/{id}/retry", tag = "jobs", params(("id" = String, Path, description = "The job id")), responses((status = 200, body = Job, description = "Queued again"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 401, body = ErrorBody, description = "No or an unknown API key")))]
pub(crate) async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(state.broker.retry(&caller.scope, id).await?))
}
