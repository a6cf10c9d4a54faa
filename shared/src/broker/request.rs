//! The values that cross the broker seam: one request struct per call that
//! takes more than a couple of arguments (so adding an option changes no
//! signature), and what the calls answer.

use crate::job::{Job, JobId, JobState, Millis};
use crate::limit::Limits;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// A job to add. The API and CLI fill in defaults (queue, retries) from the
/// task's configuration before they get here; the broker stores what it is given.
#[derive(Debug, Clone, PartialEq)]
pub struct EnqueueRequest {
    /// The job's id when the caller chooses it (the Celery ingress: the
    /// task's id); `None` for a new one. Enqueueing an id that exists
    /// stores nothing and answers the job that has it (`created: false`),
    /// so repeating an enqueue after a crash is harmless.
    pub id: Option<JobId>,
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
    /// Jobs of the tenant with the same serial key run one at a time, in
    /// enqueue order.
    pub serial_key: Option<String>,
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
            serial_key: self.serial_key,
            workflow: None,
            created_at: now,
            run_at,
            started_at: None,
            finished_at: None,
            worker: None,
            history: Vec::new(),
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
    /// The tasks the claimer has handlers for; `None`: any task. A queued
    /// job of another task is left for a worker that has its handler (set
    /// aside without spending an attempt) rather than failed.
    pub tasks: Option<Arc<Vec<String>>>,
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
    /// How long it waited from when it was due (enqueued, or its delay or
    /// backoff ended) to this claim; `None` when the broker cannot tell.
    pub waited: Option<std::time::Duration>,
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
    /// Not run yet for a reason outside the job (every key of a provider is
    /// cooling): the job waits `delay` as `retrying`, the attempt does not
    /// count against its retries, it keeps its place in its serial lane,
    /// and `reason` is its `error` while it waits.
    Snoozed {
        /// Why it waits, for the job's `error`.
        reason: String,
        /// How long it waits.
        delay: Duration,
    },
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

/// The most jobs one listing call examines. A filter that matches few of
/// them returns a short page (even an empty one) with `has_more` and a
/// cursor to go on from, instead of reading the whole history in one call.
pub const LIST_SCAN_LIMIT: usize = 2000;

/// A page of the caller's jobs, newest first, optionally filtered; each
/// call examines at most [`LIST_SCAN_LIMIT`] jobs.
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobPage {
    /// Jobs, newest first.
    pub data: Vec<Job>,
    /// Pass as `cursor` to get the next page.
    #[schema(value_type = Option<String>)]
    pub next_cursor: Option<JobId>,
    /// True when there are more jobs after this page.
    pub has_more: bool,
}

impl JobPage {
    /// The page of `limit` from `matched` (newest first, up to `limit + 1`
    /// of them); `scan_stopped_at` is the oldest job examined when the
    /// scan stopped at [`LIST_SCAN_LIMIT`] before the end.
    pub fn bounded(mut matched: Vec<Job>, limit: usize, scan_stopped_at: Option<JobId>) -> Self {
        let next_cursor = if matched.len() > limit {
            matched.truncate(limit);
            matched.last().map(|j| j.id)
        } else {
            scan_stopped_at
        };
        JobPage {
            data: matched,
            has_more: next_cursor.is_some(),
            next_cursor,
        }
    }
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

impl QueueCounts {
    /// Every queue that has a pause flag (`paused`: name, flag) or jobs
    /// (`counted`: queue, state, count), by name: what the SQL backends
    /// read, assembled once.
    pub(crate) fn assemble(
        paused: Vec<(String, bool)>,
        counted: Vec<(String, String, i64)>,
    ) -> Result<Vec<QueueCounts>, super::BrokerError> {
        let mut queues: BTreeMap<String, QueueCounts> = BTreeMap::new();
        for (name, paused) in paused {
            queues.insert(
                name.clone(),
                QueueCounts {
                    name,
                    paused,
                    counts: BTreeMap::new(),
                },
            );
        }
        for (name, state, count) in counted {
            let state = state
                .parse::<JobState>()
                .map_err(super::BrokerError::internal)?;
            queues
                .entry(name.clone())
                .or_insert_with(|| QueueCounts {
                    name,
                    paused: false,
                    counts: BTreeMap::new(),
                })
                .counts
                .insert(state, u64::try_from(count).unwrap_or(0));
        }
        Ok(queues.into_values().collect())
    }
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
    /// Unfinished jobs ahead of it in its serial lane (same tenant and
    /// serial key): it cannot start before they end.
    #[serde(default)]
    pub serial_ahead: u64,
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
    /// Waiting workflow steps whose parents had all ended, found and
    /// released (or cancelled) by the audit: a missed release repaired.
    /// It should stay 0.
    pub repaired: u64,
}

/// The job an enqueue with an explicit id met (the id exists): answered as
/// it is when it is the same tenant's, refused otherwise, so an id never
/// shows one tenant another's job.
pub(crate) fn existing_job(found: Job, tenant: &str) -> Result<Job, super::BrokerError> {
    if found.tenant == tenant {
        Ok(found)
    } else {
        Err(super::BrokerError::Invalid(format!(
            "job id {} is taken",
            found.id
        )))
    }
}
