//! The broker seam: every backend (embedded SQLite now; Redis, RabbitMQ and
//! Postgres later) implements [`Broker`], and nothing outside a backend's own
//! folder touches its client library. Each method takes one request struct
//! or a few plain values, so adding an option changes no signature.
//!
//! The contract every backend keeps (checked by the conformance suite in
//! [`conformance`], run against each backend):
//!
//! - **Leases with fencing.** [`Broker::claim`] moves a job to `running`,
//!   counts the attempt and sets a lease deadline. The pair (job id, attempt)
//!   is the fencing token: renew, progress and completion only take effect
//!   while the job is still `running` at that attempt, so a worker that lost
//!   its lease can never overwrite what a newer attempt did.
//! - **Attempts are counted at claim**, so a job that kills its worker still
//!   uses up its retries and ends in the dead letters.
//! - **Durable before reply.** When `enqueue` returns, the job survives a
//!   crash of this process.

pub mod redis;
pub mod sqlite;

#[cfg(feature = "testkit")]
pub mod conformance;

use crate::job::{Job, JobId, JobState, Millis};
use crate::limit::{Limits, TaskLimit, Usage};
use crate::node::WorkerInfo;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// A job to add. The API and CLI fill in defaults (queue, retries) from the
/// task's configuration before they get here; the broker stores what it is given.
#[derive(Debug, Clone, PartialEq)]
pub struct EnqueueRequest {
    /// Owner of the job.
    pub tenant: String,
    /// Task name.
    pub task: String,
    /// Queue to wait in.
    pub queue: String,
    /// Handler input.
    pub payload: Value,
    /// 0-9.
    pub priority: u8,
    /// When to run; `None` means now.
    pub run_at: Option<Millis>,
    /// Retries allowed after the first attempt.
    pub max_retries: u32,
    /// Per-attempt timeout.
    pub timeout_ms: Option<u64>,
    /// Deduplication key among the tenant's unfinished jobs of this task.
    pub unique_key: Option<String>,
}

impl EnqueueRequest {
    /// The job this request becomes when stored with `id` at `now` (the
    /// broker's clock), due at `run_at` (no earlier than `now`).
    pub fn into_job(self, id: JobId, now: Millis, run_at: Millis) -> Job {
        let run_at = run_at.max(now);
        Job {
            id,
            task: self.task,
            queue: self.queue,
            tenant: self.tenant,
            state: if run_at > now {
                JobState::Scheduled
            } else {
                JobState::Queued
            },
            priority: self.priority,
            payload: self.payload,
            attempts: 0,
            max_retries: self.max_retries,
            result: Value::Null,
            error: None,
            progress: Value::Null,
            timeout_ms: self.timeout_ms,
            unique_key: self.unique_key,
            created_at: now,
            run_at,
            started_at: None,
            finished_at: None,
        }
    }
}

/// What `enqueue` did.
#[derive(Debug, Clone, PartialEq)]
pub struct Enqueued {
    /// The new job, or the unfinished job that already holds the unique key.
    pub job: Job,
    /// False when a unique key matched and nothing new was added.
    pub created: bool,
}

/// A request for up to `limit` jobs from `queues`, tried in the order given.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimRequest {
    /// Who claims: recorded as the lease owner.
    pub worker: String,
    /// Queues in the order to try them (already drawn for weighted order).
    pub queues: Vec<String>,
    /// The most jobs to return: the caller's free slots, never more.
    pub limit: usize,
    /// How long the lease lasts before the reaper may hand the job to someone else.
    pub lease: Duration,
    /// Caps and rates to enforce while claiming (empty: none).
    pub limits: Arc<Limits>,
}

/// The fencing token of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lease {
    /// The job.
    pub id: JobId,
    /// The attempt this lease belongs to (1 for the first).
    pub attempt: u32,
}

/// A job handed to a worker by `claim`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedJob {
    /// Job id and attempt.
    pub lease: Lease,
    /// Task name.
    pub task: String,
    /// Queue it came from.
    pub queue: String,
    /// Owner.
    pub tenant: String,
    /// Priority it had.
    pub priority: u8,
    /// Handler input.
    pub payload: Value,
    /// Retries allowed after the first attempt.
    pub max_retries: u32,
    /// Attempts this job may still start after this one, if this one fails.
    pub retries_left: u32,
    /// Per-attempt timeout the job asked for.
    pub timeout_ms: Option<u64>,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The handler returned a result.
    Succeeded(Value),
    /// The attempt failed. With `retry_in`, the job waits that long and runs
    /// again if it has retries left; without, it goes to the dead letters now.
    Failed {
        /// Why, for the job's `error`.
        error: String,
        /// Backoff before the next attempt; `None` for a non-retryable failure.
        retry_in: Option<Duration>,
    },
    /// Handed back unfinished (graceful shutdown): queued again at once, and
    /// the interrupted attempt does not count against its retries.
    Released,
}

/// The end of one attempt, reported by the worker that holds its lease.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Fencing token.
    pub lease: Lease,
    /// What happened.
    pub outcome: Outcome,
}

/// Who is asking: a tenant sees only its own jobs; `All` is for admins and
/// the operator's CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every tenant's jobs.
    All,
    /// One tenant's jobs.
    Tenant(String),
}

impl Scope {
    /// The tenant filter, if any.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Scope::All => None,
            Scope::Tenant(t) => Some(t),
        }
    }
}

/// A page request for `list`, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct ListRequest {
    /// Whose jobs.
    pub scope: Scope,
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this state.
    pub state: Option<JobState>,
    /// Only this task.
    pub task: Option<String>,
    /// Page size.
    pub limit: usize,
    /// Start after this id (the previous page's `next_cursor`).
    pub cursor: Option<JobId>,
}

/// One page of jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPage {
    /// Jobs, newest first.
    pub data: Vec<Job>,
    /// Pass as `cursor` to get the next page.
    pub next_cursor: Option<JobId>,
    /// True when there are more jobs after this page.
    pub has_more: bool,
}

/// A queue's counts as the broker knows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCounts {
    /// Queue name.
    pub name: String,
    /// True while paused: workers take nothing from it.
    pub paused: bool,
    /// Jobs per state; states with no jobs are absent.
    pub counts: BTreeMap<JobState, u64>,
}

/// One tick of a schedule: the run to enqueue at most once, whichever
/// scheduler replica gets there first. Its job id is
/// [`JobId::for_tick`] of the schedule and fire time.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    /// Schedule name.
    pub schedule: String,
    /// The fire time (UTC), as every replica computes it.
    pub fire_time: Millis,
    /// The run.
    pub job: EnqueueRequest,
}

/// What the broker records about a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleState {
    /// Schedule name.
    pub name: String,
    /// The latest tick enqueued.
    pub last_fire: Option<Millis>,
    /// The job of that tick.
    pub last_job: Option<JobId>,
    /// True while paused: no tick fires.
    pub paused: bool,
}

/// Where a queued job waits in its queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// True when a cap or rate refused it at a claim and it waits for a
    /// permit or for the rate.
    pub held: bool,
    /// Jobs that will be offered before it (among the held jobs of its
    /// task when held).
    pub ahead: u64,
    /// Of the jobs ahead in the queue, those at a higher priority.
    pub ahead_higher_priority: u64,
}

/// What a maintenance pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// Expired leases returned to their queue.
    pub requeued: u64,
    /// Expired leases whose jobs had no attempts left and went to the dead letters.
    pub dead: u64,
    /// Scheduled or retrying jobs that became due.
    pub promoted: u64,
}

/// Why a broker call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The broker cannot be reached or is overloaded; try again later.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// No such job (or not the caller's).
    #[error("job not found")]
    NotFound,
    /// The job is in a state that does not allow this.
    #[error("job is {0}")]
    Conflict(JobState),
    /// The request cannot be carried out as given.
    #[error("{0}")]
    Invalid(String),
    /// Anything else: a bug or corrupt data.
    #[error("broker error: {0}")]
    Internal(String),
}

/// Result of a broker call.
pub type BrokerResult<T> = Result<T, BrokerError>;

/// The operations every broker backend provides.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Adds jobs in one atomic step: all of them or none. For each request the
    /// result says which job holds it (a new one, or the unfinished job that
    /// already had the unique key).
    async fn enqueue(&self, jobs: Vec<EnqueueRequest>) -> BrokerResult<Vec<Enqueued>>;

    /// Leases up to `limit` due jobs from the request's queues, in queue
    /// order and then by priority, skipping paused queues.
    async fn claim(&self, request: ClaimRequest) -> BrokerResult<Vec<ClaimedJob>>;

    /// Extends the leases that are still held; returns those that are not
    /// (the job was cancelled, reaped or finished), whose handlers must stop.
    async fn renew(&self, leases: &[Lease], lease: Duration) -> BrokerResult<Vec<Lease>>;

    /// Records the end of attempts, fenced on their leases. Returns the
    /// completions that were stale (the lease was no longer held) and so
    /// changed nothing.
    async fn complete(&self, completions: Vec<Completion>) -> BrokerResult<Vec<Lease>>;

    /// Stores a handler's progress value; false when the lease is no longer held.
    async fn set_progress(&self, lease: Lease, progress: Value) -> BrokerResult<bool>;

    /// One job, if it exists within the scope.
    async fn get(&self, scope: &Scope, id: JobId) -> BrokerResult<Option<Job>>;

    /// A page of jobs, newest first.
    async fn list(&self, request: ListRequest) -> BrokerResult<JobPage>;

    /// Cancels an unfinished job. A running job's lease is withdrawn, so its
    /// worker's next renewal tells it to stop.
    async fn cancel(&self, scope: &Scope, id: JobId) -> BrokerResult<Job>;

    /// Queues a `failed` or `cancelled` job again with a fresh retry budget.
    async fn retry(&self, scope: &Scope, id: JobId) -> BrokerResult<Job>;

    /// Pauses or resumes a queue.
    async fn set_paused(&self, queue: &str, paused: bool) -> BrokerResult<()>;

    /// Counts per queue and state, for every queue that has jobs or a pause flag.
    async fn queue_counts(&self) -> BrokerResult<Vec<QueueCounts>>;

    /// Deletes a queue's waiting jobs (scheduled, queued, retrying); running
    /// and finished jobs stay. Returns how many were deleted.
    async fn purge(&self, queue: &str) -> BrokerResult<u64>;

    /// Returns expired leases to their queues (or the dead letters) and
    /// promotes due jobs. Safe to run from every node at once.
    async fn maintain(&self) -> BrokerResult<Maintenance>;

    /// Records a worker node's heartbeat; it is listed for `ttl`.
    async fn heartbeat(&self, info: &WorkerInfo, ttl: Duration) -> BrokerResult<()>;

    /// Removes a worker node from the list (clean shutdown).
    async fn remove_worker(&self, id: &str) -> BrokerResult<()>;

    /// Worker nodes whose heartbeat has not expired.
    async fn workers(&self) -> BrokerResult<Vec<WorkerInfo>>;

    /// Checks that the broker answers.
    async fn ping(&self) -> BrokerResult<()>;

    /// Enqueues a schedule's tick unless any caller already did: keyed by
    /// (schedule, fire time) in the same atomic step as the enqueue. Returns
    /// the job when this call enqueued it, `None` when the tick had fired.
    async fn fire(&self, tick: Tick) -> BrokerResult<Option<Job>>;

    /// The recorded state of each named schedule (defaults for one never seen).
    async fn schedule_states(&self, names: &[String]) -> BrokerResult<Vec<ScheduleState>>;

    /// Pauses or resumes a schedule.
    async fn set_schedule_paused(&self, name: &str, paused: bool) -> BrokerResult<()>;

    /// Where a queued job stands in its queue (zeros for a job not queued).
    async fn position(&self, job: &Job) -> BrokerResult<Position>;

    /// Who holds the permits of `task` and what waits for them, under `limit`.
    async fn usage(&self, task: &str, limit: &TaskLimit) -> BrokerResult<Usage>;

    /// Waits until new work may be available, or `max` at most. Workers call
    /// it after an empty claim; a backend with a wake-up signal returns as
    /// soon as a job is enqueued, one without simply sleeps.
    async fn wait_for_work(&self, max: Duration) {
        tokio::time::sleep(max).await;
    }
}

/// A broker shared by every part of a process.
pub type SharedBroker = Arc<dyn Broker>;

/// Options a backend may need besides its URL.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerOptions {
    /// Prefix of every Redis key (`WEIR_REDIS_PREFIX`).
    pub redis_prefix: String,
    /// How long finished jobs are kept where the backend expires them (`WEIR_RETENTION`).
    pub retention: Duration,
    /// `synchronous=FULL` for SQLite (`WEIR_SQLITE_SYNC=full`).
    pub sqlite_full_sync: bool,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            redis_prefix: "weir".into(),
            retention: Duration::from_secs(24 * 3600),
            sqlite_full_sync: false,
        }
    }
}

/// A broker and the rate limiter that goes with it: shared through Redis
/// when the broker is Redis, in-process otherwise.
pub struct Connected {
    /// The broker.
    pub broker: SharedBroker,
    /// The rate limiter.
    pub limiter: Arc<dyn crate::limit::RateLimiter>,
}

/// Opens the broker a URL names, with its rate limiter.
pub async fn connect_with_limiter(url: &str, options: &BrokerOptions) -> BrokerResult<Connected> {
    if url.starts_with("redis://") || url.starts_with("rediss://") {
        let broker = redis::RedisBroker::open(url, &options.redis_prefix, options.retention)?;
        let limiter = Arc::new(broker.rate_limiter());
        return Ok(Connected {
            broker: Arc::new(broker),
            limiter,
        });
    }
    Ok(Connected {
        broker: connect(url, options).await?,
        limiter: Arc::new(crate::limit::LocalRateLimiter::default()),
    })
}

/// Opens the broker a URL names: `sqlite://PATH` or `redis://HOST:PORT/DB`.
pub async fn connect(url: &str, options: &BrokerOptions) -> BrokerResult<SharedBroker> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let durability = if options.sqlite_full_sync {
            sqlite::Durability::Full
        } else {
            sqlite::Durability::Normal
        };
        let broker = sqlite::SqliteBroker::open(path, durability).await?;
        return Ok(Arc::new(broker));
    }
    if url.starts_with("redis://") || url.starts_with("rediss://") {
        let broker = redis::RedisBroker::open(url, &options.redis_prefix, options.retention)?;
        return Ok(Arc::new(broker));
    }
    let scheme = url.split("://").next().unwrap_or(url);
    Err(BrokerError::Invalid(format!(
        "unsupported broker URL scheme `{scheme}`: this build supports sqlite://PATH and redis://HOST:PORT/DB"
    )))
}
