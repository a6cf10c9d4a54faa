//! `/healthz` (the process answers), `/readyz` (the broker answers and
//! takes writes too) and `/metrics` (Prometheus text).

use crate::error::ApiError;
use crate::openapi::ErrorBody;
use crate::{AppState, Caller};
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};
use std::time::Duration;

/// `GET /healthz`: 200 while the process serves requests.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()), responses((status = 200, body = serde_json::Value, description = "The process answers")))]
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when the broker answers and accepts a write, 503
/// otherwise. A broker that answers reads but refuses writes (Redis at its
/// `maxmemory`, a read-only replica, a database out of disk) would fail
/// every enqueue, so a load balancer must not send work here. The write is
/// a cooldown of one millisecond on a key of its own: it expires at once.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()), responses((status = 200, body = serde_json::Value, description = "The broker answers"), (status = 503, body = ErrorBody)))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.broker.ping().await?;
    state
        .broker
        .cool("weir:readyz", Duration::from_millis(1))
        .await?;
    Ok(Json(json!({"status": "ready"})))
}

/// `GET /metrics`: the process's counters and histograms, plus the queue
/// depths read from the broker at scrape time. With keys configured it
/// needs an admin key (Prometheus: `authorization: {credentials_file: ...}`):
/// queue and task names are the deployment's, not for every tenant.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, content_type = "text/plain", description = "Prometheus text format"), (status = 401, body = ErrorBody, description = "No or an unknown API key")))]
pub(crate) async fn metrics(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_admin()?;
    let due = {
        let mut at = state
            .gauges_read_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = at.is_none_or(|t| t.elapsed() >= GAUGES_TTL);
        if due {
            *at = Some(std::time::Instant::now());
        }
        due
    };
    if due {
        read_gauges(&state).await;
    }
    metrics::gauge!("weir_http_streams_open").set(state.streams.count() as f64);
    metrics::gauge!("weir_http_streams_jobs_followed").set(state.watchers.followed() as f64);
    let body = state
        .metrics
        .as_ref()
        .map(|h| crate::families::complete(h.render()))
        .unwrap_or_default();
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body))
}

/// How long the broker-wide gauges of `/metrics` are reused.
pub(crate) const GAUGES_TTL: Duration = Duration::from_secs(1);

/// Reads the broker-wide gauges: queue depths and heads, the backend's
/// health, limits, provider keys.
async fn read_gauges(state: &AppState) {
    if let Ok(queues) = crate::queues::cached_views(state, Some(GAUGES_TTL)).await {
        for q in &queues {
            metrics::gauge!("weir_queue_oldest_age_seconds", "queue" => q.name.clone())
                .set(q.oldest_age_seconds.unwrap_or(0.0));
        }
        for q in queues {
            for (job_state, count) in q.counts {
                metrics::gauge!("weir_queue_jobs", "queue" => q.name.clone(), "state" => job_state.as_str())
                    .set(count as f64);
            }
            metrics::gauge!("weir_queue_consumers", "queue" => q.name.clone())
                .set(q.consumers as f64);
            metrics::gauge!("weir_queue_unconsumed", "queue" => q.name.clone())
                .set(if q.unconsumed { 1.0 } else { 0.0 });
            metrics::gauge!("weir_queue_paused", "queue" => q.name.clone()).set(if q.paused {
                1.0
            } else {
                0.0
            });
        }
    }
    if let Ok(health) = state.broker.backend_health().await
        && let Some(age) = health.oldest_transaction
    {
        metrics::gauge!("weir_postgres_oldest_xact_age_seconds").set(age.as_secs_f64());
    }
    if let Ok(limits) =
        weir_shared::inspect::limit_views(state.broker.as_ref(), &state.settings.limits).await
    {
        for l in limits {
            metrics::gauge!("weir_limit_holders", "task" => l.task.clone())
                .set(l.holders.len() as f64);
            metrics::gauge!("weir_limit_waiting", "task" => l.task.clone()).set(l.waiting as f64);
        }
    }
    if let Ok(providers) =
        weir_shared::inspect::provider_views(&state.broker, &state.settings).await
    {
        for p in providers {
            for key_state in ["ok", "cooling"] {
                let n = p.keys.iter().filter(|k| k.state == key_state).count();
                metrics::gauge!("weir_provider_keys", "provider" => p.provider.clone(), "state" => key_state)
                    .set(n as f64);
            }
        }
    }
}
