//! How handlers are written and registered: a typed payload (serde), a
//! [`Context`] with the job's identity, progress reporting and cancellation,
//! and a [`TaskError`] that says whether a failure is worth retrying.
//!
//! ```no_run
//! use serde::Deserialize;
//! use weir_worker::{Context, Registry, TaskError};
//!
//! #[derive(Deserialize)]
//! struct Resize { url: String, width: u32 }
//!
//! let mut registry = Registry::with_builtins();
//! registry.register("image.resize", |ctx: Context, job: Resize| async move {
//!     ctx.progress(serde_json::json!({"step": "download"})).await;
//!     if job.width == 0 {
//!         return Err(TaskError::fatal("width must be positive"));
//!     }
//!     Ok(format!("resized {} to {}", job.url, job.width))
//! });
//! ```

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use weir_shared::broker::{Lease, SharedBroker};
use weir_shared::job::JobId;
pub use weir_shared::workflow::{ParentOutcome, StepRequest};

/// Why a handler failed, and whether to try again.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskError {
    /// Worth another attempt after the task's backoff (if retries are left).
    Retry(String),
    /// Worth another attempt after this delay instead of the task's backoff.
    RetryAfter(String, Duration),
    /// Pointless to retry (bad input, a permanent refusal): dead at once.
    Fatal(String),
    /// Not run for a reason outside the job (every key of a provider is
    /// cooling): run again after this delay, and this attempt does not
    /// count against the retries. The message is the job's `error` while
    /// it waits.
    Snooze(String, Duration),
}

impl TaskError {
    /// A retryable failure.
    pub fn retry(message: impl Into<String>) -> Self {
        TaskError::Retry(message.into())
    }

    /// A failure that no retry can fix.
    pub fn fatal(message: impl Into<String>) -> Self {
        TaskError::Fatal(message.into())
    }

    /// The same error with its message passed through `f`.
    pub fn map_message(self, f: impl FnOnce(&str) -> String) -> Self {
        match self {
            TaskError::Retry(m) => TaskError::Retry(f(&m)),
            TaskError::RetryAfter(m, d) => TaskError::RetryAfter(f(&m), d),
            TaskError::Fatal(m) => TaskError::Fatal(f(&m)),
            TaskError::Snooze(m, d) => TaskError::Snooze(f(&m), d),
        }
    }

    /// The message stored in the job's `error`.
    pub fn message(&self) -> &str {
        match self {
            TaskError::Retry(m)
            | TaskError::RetryAfter(m, _)
            | TaskError::Fatal(m)
            | TaskError::Snooze(m, _) => m,
        }
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// Any error type converts into a retryable failure, so handlers can use `?`.
impl<E: std::error::Error + Send + Sync + 'static> From<E> for TaskError {
    fn from(e: E) -> Self {
        TaskError::Retry(e.to_string())
    }
}

/// What a running handler knows about its job and can do besides its work.
#[derive(Clone)]
pub struct Context {
    lease: Lease,
    task: Arc<str>,
    queue: Arc<str>,
    tenant: Arc<str>,
    cancel: CancellationToken,
    broker: SharedBroker,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("job_id", &self.lease.id)
            .field("attempt", &self.lease.attempt)
            .field("task", &self.task)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub(crate) fn new(
        lease: Lease,
        task: &str,
        queue: &str,
        tenant: &str,
        cancel: CancellationToken,
        broker: SharedBroker,
    ) -> Self {
        Context {
            lease,
            task: task.into(),
            queue: queue.into(),
            tenant: tenant.into(),
            cancel,
            broker,
        }
    }

    /// The job's id: with [`Context::attempt`], an idempotency key for
    /// calls that must not take effect twice.
    pub fn job_id(&self) -> JobId {
        self.lease.id
    }

    /// This attempt's number, 1 for the first.
    pub fn attempt(&self) -> u32 {
        self.lease.attempt
    }

    /// Task name.
    pub fn task(&self) -> &str {
        &self.task
    }

    /// Queue the job came from.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Tenant that owns the job.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Stores a progress value on the job (shown by the API and its event
    /// stream). Returns false when this attempt no longer holds the job.
    pub async fn progress(&self, value: Value) -> bool {
        match self.broker.set_progress(self.lease, value).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(job_id = %self.lease.id, error = %e, "Progress not stored");
                false
            }
        }
    }

    /// The ends of this step's parents, by step id, when the job is a
    /// workflow step (empty for a root or a plain job). Read on demand
    /// through this attempt's lease: a join of many parents costs nothing
    /// until it asks, and an attempt that lost its lease reads nothing.
    pub async fn parents(&self) -> Result<BTreeMap<String, ParentOutcome>, TaskError> {
        let outcomes = self
            .broker
            .parent_outcomes(self.lease)
            .await
            .map_err(|e| match e {
                weir_shared::broker::BrokerError::Unavailable(m) => {
                    TaskError::retry(format!("parent results not read: {m}"))
                }
                other => TaskError::fatal(format!("parent results not read: {other}")),
            })?;
        Ok(outcomes.into_iter().map(|p| (p.step.clone(), p)).collect())
    }

    /// A step to add with [`Context::add_steps`]: `task` with `payload`
    /// on this job's queue, priority 5, the default retries, no parents
    /// but this job (set `needs` to other steps of the same call, by id,
    /// and `on_parent_failure`, as in a submitted workflow).
    pub fn step(&self, id: &str, task: &str, payload: Value) -> StepRequest {
        StepRequest {
            id: id.to_owned(),
            needs: Vec::new(),
            on_parent_failure: Default::default(),
            job: weir_shared::broker::EnqueueRequest {
                id: None,
                tenant: self.tenant.to_string(),
                task: task.to_owned(),
                queue: self.queue.to_string(),
                payload,
                priority: weir_shared::job::DEFAULT_PRIORITY,
                run_at: None,
                max_retries: weir_shared::job::DEFAULT_MAX_RETRIES,
                timeout_ms: None,
                unique_key: None,
                serial_key: None,
            },
        }
    }

    /// Adds steps to this job's workflow (dynamic fan-out: one per batch
    /// a split produced). They run after this job succeeds, and every step
    /// that needs this job waits for them too. Their ids become
    /// `THIS_STEP/ID` (returned). A rerun of this job that adds the same
    /// ids adds nothing, so call it with ids derived from the input, not
    /// from chance. Limits: 1,000 steps per call, 10,000 per workflow, 100
    /// parents per step; a job that is not a workflow step cannot add
    /// steps. A refusal is fatal (the rule is named); an outage is retried.
    pub async fn add_steps(&self, steps: Vec<StepRequest>) -> Result<Vec<String>, TaskError> {
        let spawn = weir_shared::workflow::Spawn {
            spawner: String::new(),
            steps,
        };
        self.broker
            .spawn_steps(self.lease, spawn)
            .await
            .map_err(|e| match e {
                weir_shared::broker::BrokerError::Unavailable(m) => {
                    TaskError::retry(format!("steps not added: {m}"))
                }
                other => TaskError::fatal(format!("steps not added: {other}")),
            })
    }

    /// One parent's end (see [`Context::parents`]); a fatal error when the
    /// step has no parent of that id.
    pub async fn parent(&self, step: &str) -> Result<ParentOutcome, TaskError> {
        self.parents()
            .await?
            .remove(step)
            .ok_or_else(|| TaskError::fatal(format!("this job has no parent step `{step}`")))
    }

    /// The broker the job came from (its coordination store serves the
    /// provider key pools).
    pub(crate) fn broker(&self) -> &SharedBroker {
        &self.broker
    }

    /// True once the job was cancelled, its lease lost, or the attempt timed out.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes when the handler should stop (see [`Context::is_cancelled`]).
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }
}

/// A handler with its payload type erased: takes JSON, gives JSON.
pub(crate) type Erased = Arc<
    dyn Fn(Context, Value) -> Result<BoxFuture<'static, Result<Value, TaskError>>, String>
        + Send
        + Sync,
>;

/// The tasks a worker can run, by name.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, Erased>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.handlers.keys()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Registers `handler` for `name`. The payload is decoded into `P`; a
    /// payload that does not decode fails the job at once (no retry can fix
    /// it) with serde's message. The result is stored as JSON.
    pub fn register<P, R, F, Fut>(&mut self, name: &str, handler: F) -> &mut Self
    where
        P: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(Context, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, TaskError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let task = name.to_owned();
        let erased: Erased = Arc::new(move |ctx, payload| {
            let input: P = serde_json::from_value(payload)
                .map_err(|e| format!("payload does not match what task `{task}` expects: {e}"))?;
            let fut = handler(ctx, input);
            Ok(Box::pin(async move {
                let output = fut.await?;
                serde_json::to_value(output)
                    .map_err(|e| TaskError::fatal(format!("result is not JSON: {e}")))
            }))
        });
        self.handlers.insert(name.to_owned(), erased);
        self
    }

    /// The handler for `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Erased> {
        self.handlers.get(name)
    }

    /// Registered task names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }
}
