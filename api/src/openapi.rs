//! The OpenAPI 3.1 document, served at `/openapi.json`. It is built from
//! the handlers themselves: every route is added through
//! `utoipa_axum`'s router together with its `#[utoipa::path]`, so a route
//! cannot exist without its entry, and the job's schema is the `Job` type
//! the API serializes.

use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The error envelope of every non-2xx answer.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

/// What went wrong.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct ErrorDetail {
    /// Machine-readable, e.g. `invalid_field`, `job_not_found`.
    code: String,
    /// What to fix.
    message: String,
    /// The request's id (also the `X-Request-Id` header).
    request_id: String,
}

/// A job to enqueue. Unknown fields are refused (422).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct JobSubmission {
    /// Task name, e.g. `weir.echo`.
    task: String,
    /// Queue (default: the task's configured queue, else `default`).
    queue: Option<String>,
    /// The handler's input.
    payload: Option<Value>,
    /// 0-9, higher first within a queue.
    #[schema(maximum = 9)]
    priority: Option<u8>,
    /// Run after this many milliseconds.
    delay_ms: Option<u64>,
    /// Run at this time (RFC 3339).
    #[schema(format = DateTime)]
    run_at: Option<String>,
    /// Retries after the first attempt.
    max_retries: Option<u32>,
    /// Per-attempt timeout in milliseconds.
    timeout_ms: Option<u64>,
    /// Skip (answer 200 with the holder) if an unfinished job of the task holds the key.
    unique_key: Option<String>,
    /// Run one at a time, in enqueue order, with the tenant's other jobs of the key.
    serial_key: Option<String>,
}

/// `{"jobs": [...]}`: 1 to 1,000 jobs, all enqueued or none.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct BatchSubmission {
    jobs: Vec<JobSubmission>,
}

/// The ids of a batch, in request order.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct BatchIds {
    ids: Vec<String>,
}

/// One step of a workflow: a job plus its place in the DAG.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct StepSubmission {
    /// Unique in the workflow: 1-64 letters, digits, `_`, `.`, `-`.
    id: String,
    /// Task name.
    task: String,
    /// Queue (default: the task's configured queue, else `default`).
    queue: Option<String>,
    /// The handler's input.
    payload: Option<Value>,
    /// 0-9, higher first within a queue.
    #[schema(maximum = 9)]
    priority: Option<u8>,
    /// Retries after the first attempt.
    max_retries: Option<u32>,
    /// Per-attempt timeout in milliseconds.
    timeout_ms: Option<u64>,
    /// Run one at a time, in enqueue order, with the tenant's other jobs of the key (joins the lane when the step is released).
    serial_key: Option<String>,
    /// Ids of the steps it waits for.
    needs: Option<Vec<String>>,
    /// When a parent ends `failed` or `cancelled`: `cancel` (default), `skip` or `run`.
    on_parent_failure: Option<weir_shared::workflow::OnParentFailure>,
}

/// `{"name": ..., "steps": [...]}`: 1 to 1,000 steps, checked as a whole.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct WorkflowSubmission {
    /// A name for people.
    name: Option<String>,
    /// The steps, in any order.
    steps: Vec<StepSubmission>,
}

/// API keys as bearer tokens.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key: `Authorization: Bearer wk_...`"))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "weir", description = "weir's HTTP API: jobs, workflows, queues, schedules, workers, provider pools, datasets."),
    modifiers(&Bearer),
    security(("bearer" = [])),
    components(schemas(ErrorBody, ErrorDetail, JobSubmission, BatchSubmission, BatchIds, StepSubmission, WorkflowSubmission))
)]
pub(crate) struct ApiDoc;
