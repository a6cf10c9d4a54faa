//! The embedded broker: one SQLite file in WAL mode, the default of `weir dev`.
//!
//! Writes go through a pool of one connection and `BEGIN IMMEDIATE`, so
//! writers in this process queue in order instead of failing with "database
//! is locked", and writers in other processes (the worker's children) wait
//! on the file lock for up to `busy_timeout`. Reads use a separate pool and
//! never block on writers (WAL). Batches are single statements over
//! `json_each`, so claiming or acknowledging a hundred jobs costs one
//! statement, not a hundred.
//!
//! Durability: with `synchronous=NORMAL` (the default) a commit survives a
//! crash of any process, including kill -9; `FULL` also survives an OS crash
//! or power loss, at the cost of an fsync per commit.

mod admin;
mod claim;
mod codec;
mod complete;
pub mod config;
mod connect;
mod coord;
mod cron;
mod enqueue;
mod flow;
mod inspect;
mod nodes;
mod serial;
mod workflow;

pub use config::SqliteConfig;

use crate::broker::{
    Broker, BrokerResult, ClaimRequest, ClaimedJob, Completion, EnqueueRequest, Enqueued, Lease,
    Maintenance, Scope,
};
use crate::job::{Job, JobId};
use crate::workflow::{
    ParentOutcome, Spawn, Workflow, WorkflowListRequest, WorkflowPage, WorkflowRequest,
};
use async_trait::async_trait;
use connect::{from_sqlx, unavailable};
use serde_json::Value;
use sqlx::sqlite::SqlitePool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

const JOB_COLUMNS: &str = "id, tenant, task, queue, state, priority, payload, attempts, \
     max_retries, timeout_ms, unique_key, result, error, progress, created_at, run_at, \
     started_at, finished_at, lease_owner, history, serial_key, workflow_id, step, needs";

/// Due jobs promoted per statement; bounds the time one call holds the write lock.
const PROMOTE_BATCH: i64 = 1000;
/// How long a write waits for the file lock before the broker counts as unavailable.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// How hard a commit is pushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=NORMAL`: survives a process crash (the default).
    Normal,
    /// `synchronous=FULL`: also survives an OS crash or power loss.
    Full,
}

/// The SQLite broker.
#[derive(Debug, Clone)]
pub struct SqliteBroker {
    /// One connection: every write in this process goes through it, in order.
    writer: SqlitePool,
    /// Readers; WAL lets them run beside the writer.
    reader: SqlitePool,
    /// Wakes this process's idle workers when this process enqueues.
    /// Workers in other processes fall back to short polls.
    work: Arc<Notify>,
    /// Commits concurrent enqueues together (group commit).
    enqueuer: enqueue::Enqueuer,
    /// The queue clocks this process wrote (fair share).
    clocks: Arc<flow::Clocks>,
    /// How long finished jobs are kept (maintenance deletes the rest).
    retention: crate::broker::Retention,
    /// When this handle last audited waiting workflow steps.
    audits: Arc<crate::broker::maintain::Audits>,
    /// Spaces the promotions of claims sent with acknowledgements.
    promotions: Arc<crate::broker::maintain::PromotionClock>,
}

#[async_trait]
impl Broker for SqliteBroker {
    async fn enqueue(&self, jobs: Vec<EnqueueRequest>) -> BrokerResult<Vec<Enqueued>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        self.enqueuer.submit(jobs).await
    }

    async fn claim(&self, request: ClaimRequest) -> BrokerResult<Vec<ClaimedJob>> {
        self.claim_jobs(request).await
    }

    async fn renew(&self, leases: &[Lease], lease: Duration) -> BrokerResult<Vec<Lease>> {
        self.renew_leases(leases, lease).await
    }

    async fn complete(&self, completions: Vec<Completion>) -> BrokerResult<Vec<Lease>> {
        self.complete_jobs(completions).await
    }

    async fn complete_and_claim(
        &self,
        completions: &[Completion],
        request: &ClaimRequest,
    ) -> BrokerResult<(Vec<Lease>, Vec<ClaimedJob>)> {
        self.complete_and_claim_jobs(completions, request).await
    }

    fn merges_acks(&self) -> bool {
        true
    }

    async fn set_progress(&self, lease: Lease, progress: Value) -> BrokerResult<bool> {
        self.store_progress(lease, progress).await
    }

    async fn cancel(&self, scope: &Scope, id: JobId) -> BrokerResult<Job> {
        self.cancel_job(scope, id).await
    }

    async fn maintain(&self) -> BrokerResult<Maintenance> {
        self.maintain_pass().await
    }

    async fn wait_for_work(&self, max: Duration) {
        let _ = tokio::time::timeout(max, self.work.notified()).await;
    }

    async fn submit_workflow(&self, request: WorkflowRequest) -> BrokerResult<Workflow> {
        self.submit_wf(request).await
    }

    async fn get_workflow(&self, scope: &Scope, id: JobId) -> BrokerResult<Workflow> {
        self.get_wf(scope, id).await
    }

    async fn list_workflows(&self, request: WorkflowListRequest) -> BrokerResult<WorkflowPage> {
        self.list_wf(request).await
    }

    async fn cancel_workflow(&self, scope: &Scope, id: JobId) -> BrokerResult<Workflow> {
        self.cancel_wf(scope, id).await
    }

    async fn retry_workflow(&self, scope: &Scope, id: JobId) -> BrokerResult<Workflow> {
        self.retry_wf(scope, id).await
    }

    async fn spawn_steps(&self, lease: Lease, spawn: Spawn) -> BrokerResult<Vec<String>> {
        self.spawn_wf(lease, spawn).await
    }

    async fn parent_outcomes(&self, lease: Lease) -> BrokerResult<Vec<ParentOutcome>> {
        self.parents_of(lease).await
    }

    async fn ping(&self) -> BrokerResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}
