//! `/healthz` (the process answers), `/readyz` (the broker answers too) and
//! `/metrics` (Prometheus text).

use crate::AppState;
use crate::error::ApiError;
use crate::queues::queue_views;
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};

/// `GET /healthz`: 200 while the process serves requests.
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when the broker answers, 503 otherwise.
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.broker.ping().await?;
    Ok(Json(json!({"status": "ready"})))
}

/// `GET /metrics`: the process's counters and histograms, plus the queue
/// depths read from the broker at scrape time.
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    if let Ok(queues) = queue_views(&state.broker, &state.settings).await {
        for q in queues {
            for (job_state, count) in q.counts {
                metrics::gauge!("weir_queue_jobs", "queue" => q.name.clone(), "state" => job_state.as_str())
                    .set(count as f64);
            }
            metrics::gauge!("weir_queue_paused", "queue" => q.name.clone()).set(if q.paused {
                1.0
            } else {
                0.0
            });
        }
    }
    let body = state
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
