//! The broker seam. A backend (embedded SQLite, Redis; Postgres and
//! RabbitMQ next) is one folder under `broker/` with the same files in each
//! (`mod.rs` wires, `config.rs`, `codec`, `enqueue`, `claim`, `complete`,
//! `admin`, `inspect`, `cron`, `nodes`, `coord`, and its scripts or
//! queries), and nothing outside its folder touches its client library.
//!
//! The seam is a small core trait, [`Broker`], with what every backend must
//! do to run jobs, and capability traits for the rest: [`Inspect`] (read
//! models), [`Admin`] (operator actions), [`CronStore`] (fire-once ticks),
//! [`NodeRegistry`] (worker heartbeats) and [`Coordination`] (keyed rate
//! limiters and cooldowns that are not jobs). [`Backend`] is all of them;
//! [`SharedBroker`] is what every role holds. Each method takes one request
//! struct or a few plain values, so adding an option changes no signature.
//!
//! The contract every backend keeps is checked by the conformance suites in
//! [`conformance`], run against each backend. Changing a backend means
//! extending those suites, never special-casing them.
//!
//! - **Leases with fencing.** [`Broker::claim`] moves a job to `running`,
//!   counts the attempt and sets a lease deadline. The pair (job id, attempt)
//!   is the fencing token: renew, progress and completion only take effect
//!   while the job is still `running` at that attempt, so a worker that lost
//!   its lease can never overwrite what a newer attempt did.
//! - **Attempts are counted at claim**, so a job that kills its worker still
//!   uses up its retries and ends in the dead letters.
//! - **Durable before reply.** When a write returns `Ok`, it survives a
//!   crash of this process; when it returns an error, it either happened
//!   whole or not at all (each write is one transaction or one script).
//! - **The broker's clock.** Leases, delays and rates are measured on the
//!   broker's clock (Redis `TIME`, the database's time), never the caller's.

pub mod config;
mod error;
pub mod maintain;
mod request;

pub mod redis;
pub mod sqlite;

#[cfg(feature = "testkit")]
pub mod conformance;

pub use config::{BrokerConfig, Connected};
pub use error::{BrokerError, BrokerResult};
pub use request::*;

use crate::job::{Job, JobId};
use crate::limit::{Decision, KeyedRate, TaskLimit, Usage};
use crate::node::WorkerInfo;
use async_trait::async_trait;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Running jobs: what every backend must do.
///
/// A crash of the caller at any point leaves every job in exactly one
/// state: before a call's atomic step nothing changed; after it, the change
/// is stored. A lease the crashed caller held lapses at its deadline and
/// [`Broker::maintain`] hands the job to someone else.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Adds jobs in one atomic step: all of them or none. For each request the
    /// result says which job holds it (a new one, or the unfinished job that
    /// already had the unique key). Repeating a call whose reply was lost
    /// adds nothing twice where the backend can tell (same job ids).
    async fn enqueue(&self, jobs: Vec<EnqueueRequest>) -> BrokerResult<Vec<Enqueued>>;

    /// Leases up to `limit` due jobs from the request's queues, in queue
    /// order and then by priority, skipping paused queues, enforcing the
    /// request's caps and rates in the same atomic step (a refused job keeps
    /// its attempts). A crash after the step leaves leased jobs that return
    /// when their lease expires.
    async fn claim(&self, request: ClaimRequest) -> BrokerResult<Vec<ClaimedJob>>;

    /// Extends the leases that are still held; returns those that are not
    /// (the job was cancelled, reaped or finished), whose handlers must stop.
    async fn renew(&self, leases: &[Lease], lease: Duration) -> BrokerResult<Vec<Lease>>;

    /// Records the end of attempts, fenced on their leases, freeing their
    /// permits in the same step. Returns the completions that were stale
    /// (the lease was no longer held) and so changed nothing.
    async fn complete(&self, completions: Vec<Completion>) -> BrokerResult<Vec<Lease>>;

    /// Stores a handler's progress value; false when the lease is no longer held.
    async fn set_progress(&self, lease: Lease, progress: Value) -> BrokerResult<bool>;

    /// Cancels an unfinished job. A running job's lease is withdrawn (and
    /// its permit freed), so its worker's next renewal tells it to stop.
    async fn cancel(&self, scope: &Scope, id: JobId) -> BrokerResult<Job>;

    /// Returns expired leases to their queues (or the dead letters), frees
    /// their permits and promotes due jobs, in bounded batches. Safe to run
    /// from every node at once: each job is moved by exactly one caller.
    async fn maintain(&self) -> BrokerResult<Maintenance>;

    /// Checks that the broker answers.
    async fn ping(&self) -> BrokerResult<()>;

    /// Waits until new work may be available, or `max` at most. Workers call
    /// it after an empty claim; a backend with a wake-up signal returns as
    /// soon as a job is enqueued, one without simply sleeps.
    async fn wait_for_work(&self, max: Duration) {
        tokio::time::sleep(max).await;
    }
}

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
}

/// Every capability: what a role holds. Implemented for any type that has
/// them all.
pub trait Backend: Broker + Inspect + Admin + CronStore + NodeRegistry + Coordination {}

impl<T: Broker + Inspect + Admin + CronStore + NodeRegistry + Coordination> Backend for T {}

/// A broker shared by every part of a process.
pub type SharedBroker = Arc<dyn Backend>;
