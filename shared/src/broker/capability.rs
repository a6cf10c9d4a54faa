//! The capability traits: what a backend does besides running jobs. Each
//! is a separate trait so a backend states what it offers, and each
//! states its contract; [`super::Backend`] is every one of them.

use super::{
    BrokerResult, JobPage, ListRequest, Position, QueueCounts, ScheduleState, Scope, Tick,
};
use crate::job::{Job, JobId, Millis};
use crate::limit::{Decision, KeyedRate, TaskLimit, Usage};
use crate::node::WorkerInfo;
use async_trait::async_trait;
use std::time::Duration;

/// Read models for the API, the CLI and `explain`. Reads never change a
/// job; a read racing a write sees the state before or after it, whole.
#[async_trait]
pub trait Inspect: Send + Sync + 'static {
    /// One job, if it exists within the scope.
    async fn get(&self, scope: &Scope, id: JobId) -> BrokerResult<Option<Job>>;

    /// A page of jobs, newest first.
    async fn list(&self, request: ListRequest) -> BrokerResult<JobPage>;

    /// Counts per queue and state, for every queue that has jobs or a pause flag.
    async fn queue_counts(&self) -> BrokerResult<Vec<QueueCounts>>;

    /// Where a queued job stands in its queue (zeros for a job not queued).
    async fn position(&self, job: &Job) -> BrokerResult<Position>;

    /// Who holds the permits of `task` and what waits for them, under `limit`.
    async fn usage(&self, task: &str, limit: &TaskLimit) -> BrokerResult<Usage>;

    /// For each queue, when the job a worker would take next became due
    /// (enqueued, or its delay or backoff ended); `None` for a queue with
    /// nothing queued. One indexed read per queue: the oldest-age gauge.
    async fn queue_heads(&self, queues: &[String]) -> BrokerResult<Vec<Option<Millis>>>;

    /// Readings of the backend's own health that only some backends have,
    /// for `/metrics`; none by default.
    async fn backend_health(&self) -> BrokerResult<BackendHealth> {
        Ok(BackendHealth::default())
    }
}

/// Health readings of a backend, each `None` where the backend has no such
/// thing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BackendHealth {
    /// How long the oldest open transaction on the broker's database has
    /// run (Postgres): while one is open, vacuum cannot remove the dead
    /// versions of finished jobs and claims slow down as they pile up.
    pub oldest_transaction: Option<Duration>,
}

/// Operator actions on jobs and queues; each is one atomic step.
#[async_trait]
pub trait Admin: Send + Sync + 'static {
    /// Queues a `failed` or `cancelled` job again with a fresh retry budget.
    /// [`BrokerError::UniqueKeyHeld`] when another unfinished job of its
    /// task took its unique key meanwhile.
    async fn retry(&self, scope: &Scope, id: JobId) -> BrokerResult<Job>;

    /// Pauses or resumes a queue. Resuming wakes idle workers.
    async fn set_paused(&self, queue: &str, paused: bool) -> BrokerResult<()>;

    /// Deletes a queue's waiting jobs (scheduled, queued, retrying); running
    /// and finished jobs stay. Returns how many were deleted.
    async fn purge(&self, queue: &str) -> BrokerResult<u64>;

    /// Deletes the finished jobs (succeeded, failed, cancelled) among `ids`
    /// that `scope` may see, in one atomic step; unfinished ones stay.
    /// Returns how many were deleted.
    async fn delete(&self, scope: &Scope, ids: &[JobId]) -> BrokerResult<u64>;
}

/// Fire-once state of cron schedules, shared by every scheduler replica.
#[async_trait]
pub trait CronStore: Send + Sync + 'static {
    /// Enqueues a schedule's tick unless any caller already did: keyed by
    /// (schedule, fire time) in the same atomic step as the enqueue, so
    /// replicas racing on one tick make one job, and a replica killed after
    /// the step leaves the tick fired. Returns the job when this call
    /// enqueued it, `None` when the tick had fired (or a unique key held it).
    async fn fire(&self, tick: Tick) -> BrokerResult<Option<Job>>;

    /// The recorded state of each named schedule (defaults for one never seen).
    async fn schedule_states(&self, names: &[String]) -> BrokerResult<Vec<ScheduleState>>;

    /// Pauses or resumes a schedule on every replica.
    async fn set_schedule_paused(&self, name: &str, paused: bool) -> BrokerResult<()>;
}

/// Which worker nodes are alive. A node that dies simply stops renewing;
/// its entry expires after `ttl`, so no cleanup is needed after a crash.
#[async_trait]
pub trait NodeRegistry: Send + Sync + 'static {
    /// Records a worker node's heartbeat; it is listed for `ttl`.
    async fn heartbeat(&self, info: &WorkerInfo, ttl: Duration) -> BrokerResult<()>;

    /// Removes a worker node from the list (clean shutdown).
    async fn remove_worker(&self, id: &str) -> BrokerResult<()>;

    /// Worker nodes whose heartbeat has not expired.
    async fn workers(&self) -> BrokerResult<Vec<WorkerInfo>>;
}

/// Coordination that is not jobs: keyed rate limiters (API budgets,
/// provider keys' rpm and tpm) and keyed cooldowns (a provider key that
/// answered 429). Every caller of one broker shares the same state, each
/// decision is one atomic step, and time is the broker's, so callers on
/// hosts with skewed clocks agree. Checked by the coordination suite
/// ([`conformance::coordination`]).
#[async_trait]
pub trait Coordination: Send + Sync + 'static {
    /// Counts `cost` events under `key` if the rate allows them now (GCRA,
    /// [`crate::limit::gcra`]): all of them or none. A refusal says how long
    /// until they would fit; it changes nothing.
    async fn admit(&self, key: &str, rate: KeyedRate, cost: u32) -> BrokerResult<Decision>;

    /// Marks `key` as cooling for `period` from now (the broker's now). A
    /// key already cooling longer keeps its later end.
    async fn cool(&self, key: &str, period: Duration) -> BrokerResult<()>;

    /// For each key, how long it still cools (`None`: not cooling).
    async fn cooling(&self, keys: &[String]) -> BrokerResult<Vec<Option<Duration>>>;

    /// Adds `by` to the counter `key` (requests, 429s and tokens of a
    /// provider key); the counter is forgotten `ttl` after its last change.
    async fn count(&self, key: &str, by: i64, ttl: Duration) -> BrokerResult<()>;

    /// For each key, its counter (0 for one never counted or forgotten).
    async fn counters(&self, keys: &[String]) -> BrokerResult<Vec<i64>>;
}

/// Counter values in the order of `keys`, from the (key, value) rows a
/// store found (0 for a key it did not find): the SQL backends' answer to
/// [`Coordination::counters`].
pub(crate) fn in_key_order(keys: &[String], rows: Vec<(String, i64)>) -> Vec<i64> {
    let values: std::collections::HashMap<String, i64> = rows.into_iter().collect();
    keys.iter()
        .map(|k| values.get(k).copied().unwrap_or(0))
        .collect()
}
