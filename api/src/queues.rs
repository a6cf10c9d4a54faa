//! `/v1/queues` (counts per state, paused flag; pause and resume) and
//! `/v1/workers` (live nodes from their heartbeats).

use crate::error::ApiError;
use crate::openapi::ErrorBody;
use crate::{AppState, Caller};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use weir_shared::inspect::{QueueView, queue_views};

async fn one(state: &AppState, name: &str) -> Result<QueueView, ApiError> {
    queue_views(&state.broker, &state.settings)
        .await?
        .into_iter()
        .find(|q| q.name == name)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("unknown queue `{}`", weir_shared::input::shown(name)),
            )
        })
}

/// `GET /v1/queues`.
#[utoipa::path(get, path = "/v1/queues", tag = "queues", responses((status = 200, body = serde_json::Value, description = "Every queue with its counts"), (status = 401, body = ErrorBody, description = "No or an unknown API key")))]
pub(crate) async fn list(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<Json<Value>, ApiError> {
    // `Cache-Control: max-age=N`: the caller accepts counts up to N seconds
    // old, so any number of open dashboards cost one count per N seconds.
    let max_age = headers
        .get(axum::http::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .find_map(|d| d.trim().strip_prefix("max-age=")?.parse::<u64>().ok())
        });
    let queues = cached_views(&state, max_age.map(std::time::Duration::from_secs)).await?;
    let retention = state.settings.broker.retention().to_json();
    Ok(Json(json!({"data": queues, "retention": retention})))
}

/// The queue views, from the cache when a caller accepts them `max_age` old.
pub(crate) async fn cached_views(
    state: &AppState,
    max_age: Option<std::time::Duration>,
) -> Result<Vec<QueueView>, ApiError> {
    let lock = || {
        state
            .queue_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    if let Some(max_age) = max_age
        && let Some((at, views)) = lock().as_ref()
        && at.elapsed() <= max_age
    {
        return Ok(views.clone());
    }
    let views = queue_views(&state.broker, &state.settings).await?;
    *lock() = Some((std::time::Instant::now(), views.clone()));
    Ok(views)
}

/// `GET /v1/queues/{name}`.
#[utoipa::path(get, path = "/v1/queues/{name}", tag = "queues", params(("name" = String, Path, description = "The queue")), responses((status = 200, body = serde_json::Value), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody, description = "No or an unknown API key")))]
pub(crate) async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<QueueView>, ApiError> {
    one(&state, &name).await.map(Json)
}

async fn set_paused(
    state: &AppState,
    name: &str,
    paused: bool,
) -> Result<Json<QueueView>, ApiError> {
    // Only queues that exist: a typo must not create a paused phantom queue.
    one(state, name).await?;
    state.broker.set_paused(name, paused).await?;
    tracing::info!(queue = %name, paused, "Queue paused flag changed");
    one(state, name).await.map(Json)
}

/// `POST /v1/queues/{name}/pause` (admin keys only).
#[utoipa::path(post, path = "/v1/queues/{name}/pause", tag = "queues", params(("name" = String, Path, description = "The queue")), responses((status = 200, body = serde_json::Value), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody, description = "No or an unknown API key")))]
pub(crate) async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<QueueView>, ApiError> {
    caller.require_admin()?;
    set_paused(&state, &name, true).await
}

/// `POST /v1/queues/{name}/resume` (admin keys only).
#[utoipa::path(post, path = "/v1/queues/{name}/resume", tag = "queues", params(("name" = String, Path, description = "The queue")), responses((status = 200, body = serde_json::Value), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody, description = "No or an unknown API key")))]
pub(crate) async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<QueueView>, ApiError> {
    caller.require_admin()?;
    set_paused(&state, &name, false).await
}

/// `GET /v1/limits` (admin keys only): caps and rates in force, their
/// holders and what waits for them.
#[utoipa::path(get, path = "/v1/limits", tag = "admin", responses((status = 200, body = serde_json::Value), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody, description = "No or an unknown API key")))]
pub(crate) async fn limits(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let views =
        weir_shared::inspect::limit_views(state.broker.as_ref(), &state.settings.limits).await?;
    Ok(Json(json!({"data": views})))
}

/// `GET /v1/schedules` (admin keys only): cron schedules with their last
/// and next fire times and the state of their latest run.
#[utoipa::path(get, path = "/v1/schedules", tag = "admin", responses((status = 200, body = serde_json::Value), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody, description = "No or an unknown API key")))]
pub(crate) async fn schedules(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let views = weir_shared::inspect::schedule_views(&state.broker, &state.settings).await?;
    Ok(Json(json!({"data": views})))
}

/// `GET /v1/providers` (admin keys only): each provider's keys, masked,
/// with their state and counters.
#[utoipa::path(get, path = "/v1/providers", tag = "admin", responses((status = 200, body = serde_json::Value, description = "Provider key pools, keys masked"), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody, description = "No or an unknown API key")))]
pub(crate) async fn providers(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let views = weir_shared::inspect::provider_views(&state.broker, &state.settings).await?;
    Ok(Json(json!({"data": views})))
}

/// `GET /v1/workers` (admin keys only).
#[utoipa::path(get, path = "/v1/workers", tag = "admin", responses((status = 200, body = serde_json::Value, description = "Live worker nodes"), (status = 403, body = ErrorBody), (status = 401, body = ErrorBody, description = "No or an unknown API key")))]
pub(crate) async fn workers(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let workers = state.broker.workers().await?;
    Ok(Json(json!({"data": workers})))
}
