//! weir's HTTP API: a thin axum service over the broker seam. Every
//! handler validates, calls one broker method and maps the answer to the
//! interface's JSON and status codes.
//!
//! # Layout
//!
//! - [`router`] builds the app (tests call it with `oneshot`, no socket);
//!   [`serve`] runs it on a listener until a shutdown future completes
//!   (`server`: timeouts, the connection cap, draining).
//! - `error`: [`ApiError`], the one place errors become status codes.
//! - `access`: request ids and the access log.
//! - `limits`: what bounds one request (head size, time) and one client
//!   (failed logins, open streams).
//! - `input`: request bodies and query strings, checked field by field.
//! - `jobs`, `events`, `queues`, `health`: the routes.

mod access;
mod admin;
mod caller;
mod datasets;
mod error;
mod events;
pub mod families;
mod health;
mod input;
mod jobs;
mod limits;
mod openapi;
pub mod ops;
mod queues;
mod server;
mod ui;
mod workflows;

pub use caller::Caller;
pub use error::ApiError;
pub use server::{connection_cap, serve, serve_app};

use axum::Json;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use weir_shared::broker::SharedBroker;
use weir_shared::config::Settings;
use weir_shared::limit::{LocalRateLimiter, RateLimiter};

/// The tenant that owns jobs while authentication is off.
pub const DEFAULT_TENANT: &str = "default";

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Where jobs live.
    pub broker: SharedBroker,
    /// Queues, tasks and limits.
    pub settings: Arc<Settings>,
    /// Renders `/metrics`; `None` when this process installed no recorder.
    pub metrics: Option<PrometheusHandle>,
    /// Task names this API accepts besides built-in and configured ones
    /// (handlers registered in a custom worker binary).
    pub extra_tasks: Arc<Vec<String>>,
    /// API rate limits: shared through Redis, or in-process.
    pub limiter: Arc<dyn RateLimiter>,
    /// Cancelled when the server shuts down: open event streams end.
    pub closing: CancellationToken,
    /// Failed authentications per client address.
    pub(crate) auth_failures: Arc<limits::AuthFailures>,
    /// Event streams open, in all and per key.
    pub(crate) streams: Arc<limits::Streams>,
    /// One poller per job followed by event streams.
    pub(crate) watchers: Arc<events::Watchers>,
    /// When `/metrics` last read the broker-wide gauges (they are read at
    /// most once per [`health::GAUGES_TTL`], however many scrape).
    pub(crate) gauges_read_at: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    /// The last queue views read, and when: served to a caller that
    /// accepts them that old (`Cache-Control: max-age=N`: the dashboard).
    pub(crate) queue_cache: Arc<std::sync::Mutex<Option<CachedQueues>>>,
    /// The vector store and embedder of the dataset routes.
    pub(crate) datasets: Arc<datasets::Datasets>,
}

/// Queue views and when they were read.
type CachedQueues = (std::time::Instant, Vec<weir_shared::inspect::QueueView>);

impl AppState {
    /// State with no metrics recorder and no extra tasks.
    pub fn new(broker: SharedBroker, settings: Arc<Settings>) -> Self {
        let closing = CancellationToken::new();
        let watchers = Arc::new(events::Watchers::new(broker.clone(), closing.clone()));
        AppState {
            broker,
            metrics: None,
            extra_tasks: Arc::new(Vec::new()),
            limiter: Arc::new(LocalRateLimiter::default()),
            watchers,
            gauges_read_at: Arc::default(),
            queue_cache: Arc::default(),
            datasets: Arc::default(),
            closing,
            auth_failures: Arc::new(limits::AuthFailures::new(settings.http.auth_failure_limit)),
            streams: Arc::new(limits::Streams::new(
                settings.http.max_streams,
                settings.http.max_streams_per_key,
            )),
            settings,
        }
    }

    pub(crate) fn catalog(&self) -> weir_shared::input::Catalog<'_> {
        weir_shared::input::Catalog {
            settings: &self.settings,
            extra_tasks: &self.extra_tasks,
        }
    }
}

/// Every route that needs an API key, each with its OpenAPI entry.
fn authenticated_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(jobs::enqueue, jobs::list))
        .routes(routes!(jobs::enqueue_batch))
        .routes(routes!(admin::bulk))
        .routes(routes!(jobs::show, jobs::cancel))
        .routes(routes!(jobs::retry))
        .routes(routes!(events::stream))
        .routes(routes!(jobs::explain))
        .routes(routes!(workflows::submit, workflows::list))
        .routes(routes!(workflows::show, workflows::cancel))
        .routes(routes!(workflows::retry))
        .routes(routes!(workflows::events))
        .routes(routes!(datasets::list))
        .routes(routes!(datasets::documents))
        .routes(routes!(datasets::search))
        .routes(routes!(datasets::delete))
        .routes(routes!(queues::list))
        .routes(routes!(queues::show))
        .routes(routes!(queues::pause))
        .routes(routes!(queues::resume))
        .routes(routes!(admin::purge))
        .routes(routes!(queues::workers))
        .routes(routes!(queues::providers))
        .routes(routes!(queues::limits))
        .routes(routes!(queues::schedules))
        .routes(routes!(admin::trigger))
        .routes(routes!(admin::pause_schedule))
        .routes(routes!(admin::resume_schedule))
        .routes(routes!(health::metrics))
}

/// Routes anyone may call (probes), each with its OpenAPI entry.
fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(ui::page))
}

/// The OpenAPI document of the whole API (what `/openapi.json` serves).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let mut document = authenticated_routes().into_openapi();
    document.merge(public_routes().into_openapi());
    document
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let limit = state.settings.http.max_payload_bytes;
    let (v1, _) = authenticated_routes().split_for_parts();
    let v1 = v1.route_layer(middleware::from_fn_with_state(
        state.clone(),
        caller::authenticate,
    ));
    let (public, _) = public_routes().split_for_parts();
    let document = Arc::new(openapi_document());
    Router::new()
        .merge(v1)
        .merge(public)
        .route("/ui/app.js", get(ui::script))
        .route("/ui/app.css", get(ui::style))
        .route(
            "/openapi.json",
            get(move || {
                let document = document.clone();
                async move { Json(document.as_ref().clone()) }
            }),
        )
        .method_not_allowed_fallback(error::method_not_allowed)
        .fallback(error::not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limits::bound_request,
        ))
        .layer(middleware::from_fn(access::log_access))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}
