//! The access log and request ids. Every request gets an id: the client's
//! `X-Request-Id` when it sends a usable one (up to 128 printable ASCII
//! characters), else a new one. It is echoed in the `X-Request-Id` response
//! header and in every error body (`error.request_id`), and logged with one
//! line per request at `info` on the target `weir::access`: method, route
//! (the template, never ids or query strings), status, duration, tenant and
//! request id. Never the key. `WEIR_LOG=info,weir::access=off` silences it.
//! Each request also counts in `weir_http_requests_total{route,method,status}`
//! and `weir_http_request_duration_seconds{route}` (the route template keeps
//! the label set bounded; paths no route matches are `unmatched`).

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;
use std::time::Instant;

/// The response header (and request header) carrying the id.
pub(crate) const REQUEST_ID_HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: Arc<str>;
}

/// The tenant a request was served for, left in the response by
/// authentication for the access log.
#[derive(Clone)]
pub(crate) struct ServedTenant(pub(crate) String);

/// The id of the request being handled, if any.
pub(crate) fn current_request_id() -> Option<Arc<str>> {
    REQUEST_ID.try_with(Arc::clone).ok()
}

fn usable(value: &HeaderValue) -> Option<Arc<str>> {
    let text = value.to_str().ok()?;
    (!text.is_empty() && text.len() <= 128 && text.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| Arc::from(text))
}

/// Middleware around everything: assigns the id, runs the request in its
/// scope, echoes it and writes the access line.
pub(crate) async fn log_access(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(usable)
        .unwrap_or_else(|| Arc::from(uuid::Uuid::now_v7().simple().to_string()));
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let mut response = REQUEST_ID.scope(id.clone(), next.run(request)).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let tenant = response
        .extensions()
        .get::<ServedTenant>()
        .map_or("-", |t| t.0.as_str());
    let took = started.elapsed();
    metrics::counter!(
        "weir_http_requests_total",
        "route" => route.clone(),
        "method" => method.to_string(),
        "status" => response.status().as_u16().to_string()
    )
    .increment(1);
    metrics::histogram!("weir_http_request_duration_seconds", "route" => route.clone())
        .record(took.as_secs_f64());
    tracing::info!(
        target: "weir::access",
        method = %method,
        route = %route,
        status = response.status().as_u16(),
        ms = took.as_secs_f64() * 1000.0,
        tenant = %tenant,
        request_id = %id,
        "request"
    );
    response
}
