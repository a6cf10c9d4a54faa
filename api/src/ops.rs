//! The operations endpoints of the roles that serve no API (`weir worker`,
//! `weir scheduler`), on `WEIR_METRICS_ADDR` (off by default): `/healthz`
//! (the process answers), `/readyz` (the broker answers and the role does
//! its work: a worker node has at least one child consuming, a scheduler
//! is running) and `/metrics` (the process's Prometheus text). They carry
//! no job data and take no key: bind the address to a private interface.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};
use std::sync::Arc;
use weir_shared::broker::SharedBroker;

/// What the endpoints read.
#[derive(Clone)]
pub struct OpsState {
    /// The role's broker.
    pub broker: SharedBroker,
    /// Renders `/metrics`; `None`: no recorder in this process.
    pub metrics: Option<PrometheusHandle>,
    /// True while the role does its work.
    pub working: Arc<dyn Fn() -> bool + Send + Sync>,
    /// The role, for the answers.
    pub role: &'static str,
}

/// The three routes.
pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz(State(state): State<OpsState>) -> Json<Value> {
    Json(json!({"status": "ok", "role": state.role}))
}

async fn readyz(State(state): State<OpsState>) -> (StatusCode, Json<Value>) {
    let broker = state.broker.ping().await;
    let working = (state.working)();
    let ready = broker.is_ok() && working;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ready { "ready" } else { "not_ready" },
            "role": state.role,
            "broker": if broker.is_ok() { "ok" } else { "unavailable" },
            "working": working,
        })),
    )
}

async fn metrics(State(state): State<OpsState>) -> impl IntoResponse {
    let body = state
        .metrics
        .as_ref()
        .map(|h| crate::families::complete(h.render()))
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
