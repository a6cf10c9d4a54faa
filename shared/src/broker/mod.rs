//! The broker seam. A backend (embedded SQLite, Redis, Postgres;
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

mod admission;
mod capability;
pub mod config;
mod error;
pub mod maintain;
mod request;
pub mod retention;

pub mod postgres;
pub mod redis;
pub mod sqlite;

#[cfg(feature = "testkit")]
pub mod conformance;

pub use capability::{Admin, BackendHealth, Coordination, CronStore, Inspect, NodeRegistry};
pub use config::{BrokerConfig, Connected};
pub use error::{BrokerError, BrokerResult};
pub use request::*;
pub use retention::Retention;

use crate::job::{Job, JobId};
use crate::workflow::{
    ParentOutcome, Spawn, Workflow, WorkflowListRequest, WorkflowPage, WorkflowRequest,
};
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

    /// Records `completions` and then leases jobs for `request`: what a
    /// worker does when a finished job frees its slot. An error means the
    /// completions were not recorded (the caller acknowledges them again);
    /// on `Ok` they were, with the stale ones returned as by
    /// [`Broker::complete`]. Backends that do both in one atomic step say so
    /// in [`Broker::merges_acks`]; this default makes the two calls in turn
    /// and reports a failed claim as an empty one, after logging it.
    async fn complete_and_claim(
        &self,
        completions: &[Completion],
        request: &ClaimRequest,
    ) -> BrokerResult<(Vec<Lease>, Vec<ClaimedJob>)> {
        let stale = self.complete(completions.to_vec()).await?;
        match self.claim(request.clone()).await {
            Ok(claimed) => Ok((stale, claimed)),
            Err(e) => {
                tracing::warn!(error = %e, "Claim after acknowledging failed");
                Ok((stale, Vec::new()))
            }
        }
    }

    /// True when [`Broker::complete_and_claim`] costs one step instead of
    /// two, so a worker gains by sending its acknowledgements with its next
    /// claim rather than on their own.
    fn merges_acks(&self) -> bool {
        false
    }

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

    /// Adds a workflow, already validated ([`WorkflowRequest::validate`]),
    /// in one atomic step: its record, every step's job (roots `queued`,
    /// the rest `waiting`) and every edge, or nothing. From then on a
    /// step's terminal transition (completion, cancel, the reaper's dead
    /// letter) releases, cancels or skips its children in the same atomic
    /// step, by their `on_parent_failure`.
    async fn submit_workflow(&self, request: WorkflowRequest) -> BrokerResult<Workflow>;

    /// One workflow with every step; [`BrokerError::WorkflowNotFound`]
    /// outside the scope.
    async fn get_workflow(&self, scope: &Scope, id: JobId) -> BrokerResult<Workflow>;

    /// A page of workflows, newest first.
    async fn list_workflows(&self, request: WorkflowListRequest) -> BrokerResult<WorkflowPage>;

    /// Cancels every unfinished step in one atomic step (running ones lose
    /// their lease, as by [`Broker::cancel`]); the workflow ends
    /// `cancelled`. [`BrokerError::WorkflowConflict`] when it had ended.
    async fn cancel_workflow(&self, scope: &Scope, id: JobId) -> BrokerResult<Workflow>;

    /// Puts an ended workflow's failed and cancelled steps back, in one
    /// atomic step: each with a fresh retry budget, `queued` when none of
    /// its parents is among them, else `waiting`; succeeded steps keep
    /// their results. [`BrokerError::WorkflowConflict`] while it runs or
    /// when no step failed or was cancelled.
    async fn retry_workflow(&self, scope: &Scope, id: JobId) -> BrokerResult<Workflow>;

    /// Adds steps to the workflow of the running step that holds `lease`,
    /// in one atomic step: each waits for the spawner (and for the spawn's
    /// steps it names), and every step that needs the spawner now also
    /// needs them. Nothing added runs before the spawner succeeds; a rerun
    /// of the spawner that adds the same ids adds nothing. Returns the
    /// full ids. [`BrokerError::Invalid`] when the job is not a step or
    /// the spawn breaks a rule (named); an error once the lease is lost.
    async fn spawn_steps(&self, lease: Lease, spawn: Spawn) -> BrokerResult<Vec<String>>;

    /// The ends of a running step's parents, fenced on its lease: an error
    /// once the lease is no longer held (which also keeps tenants apart).
    async fn parent_outcomes(&self, lease: Lease) -> BrokerResult<Vec<ParentOutcome>>;

    /// Waits until new work may be available, or `max` at most. Workers call
    /// it after an empty claim; a backend with a wake-up signal returns as
    /// soon as a job is enqueued, one without simply sleeps.
    async fn wait_for_work(&self, max: Duration) {
        tokio::time::sleep(max).await;
    }

    /// The longest an idle worker waits between claims: short where
    /// [`Broker::wait_for_work`] cannot hear other processes enqueue (a
    /// poll is all they have), longer where a wake-up signal carries the
    /// news and the wait is only the floor for what it does not announce.
    fn max_idle_wait(&self) -> Duration {
        Duration::from_millis(25)
    }
}

/// Every capability: what a role holds. Implemented for any type that has
/// them all.
pub trait Backend: Broker + Inspect + Admin + CronStore + NodeRegistry + Coordination {}

impl<T: Broker + Inspect + Admin + CronStore + NodeRegistry + Coordination> Backend for T {}

/// A broker shared by every part of a process.
pub type SharedBroker = Arc<dyn Backend>;
