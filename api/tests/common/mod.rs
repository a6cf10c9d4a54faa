//! What the API test files share: one request through the real router.

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use weir_api::{AppState, router};

/// Sends `request` through the router; the status, headers and JSON body
/// (`Null` when the body is not JSON).
pub async fn respond(state: &AppState, request: Request<Body>) -> (StatusCode, HeaderMap, Value) {
    let response = router(state.clone())
        .oneshot(request)
        .await
        .expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}
