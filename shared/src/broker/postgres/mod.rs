//! Postgres as the broker: jobs, leases, caps, rates, fair share, schedules
//! and heartbeats in one schema (`WEIR_POSTGRES_SCHEMA`), with `FOR UPDATE
//! SKIP LOCKED` doing what the Lua scripts do on Redis.
//!
//! - **No handler runs inside a transaction.** Only the lease lasts as long
//!   as the job; every call here is one short transaction (most are one
//!   statement in autocommit), so vacuum is never held back by weir.
//! - **Claims** lock candidate rows with `SKIP LOCKED` inside `MATERIALIZED`
//!   CTEs, so concurrent claimers never wait for each other and never take
//!   more than they asked for. A claim whose request carries caps or rates
//!   first takes one advisory lock per limited task (in sorted order), then
//!   counts permits in a separate statement (a statement sees the commits
//!   made before it started, so the count includes the previous holder's
//!   claims), then admits with the same decision code as SQLite.
//! - **Permits are running rows**: nothing to leak, freed by ack, nack,
//!   cancel and the reaper.
//! - **Time** is the server's (`now_ms()` in the schema), one clock for
//!   every node's leases and due times.
//! - **Wake-ups**: `NOTIFY` after commit, debounced per process, never in
//!   the enqueue's transaction (a notifying commit takes a database-wide
//!   lock); `LISTEN` on one connection per process; a poll floor behind it.
//!   `WEIR_POSTGRES_NOTIFY=false` polls only (PgBouncer transaction mode).
//!
//! `../design/postgres.md` of the project documents has the measurements
//! behind each choice.

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
mod notify;
mod serial;
mod workflow;

pub use config::PostgresConfig;
pub use connect::SchemaCleanup;

use crate::broker::{
    Broker, BrokerResult, ClaimRequest, ClaimedJob, Completion, EnqueueRequest, Enqueued, Lease,
    Maintenance, Scope,
};
use crate::job::{Job, JobId};
use crate::workflow::{
    ParentOutcome, Spawn, Workflow, WorkflowListRequest, WorkflowPage, WorkflowRequest,
};
use async_trait::async_trait;
use connect::from_sqlx;
use serde_json::Value;
use sqlx::postgres::PgPool;
use std::sync::Arc;
use std::time::Duration;

/// The columns `codec::job` reads.
const JOB_COLUMNS: &str = "id, tenant, task, queue, state, priority, payload::text AS payload, \
     attempts, max_retries, timeout_ms, unique_key, result::text AS result, error, \
     progress::text AS progress, created_at, run_at, started_at, finished_at, lease_owner, \
     history::text AS history, serial_key, workflow_id, step, needs::text AS needs";

/// Due jobs promoted per statement.
const PROMOTE_BATCH: i64 = 1000;

/// The Postgres broker.
#[derive(Debug, Clone)]
pub struct PostgresBroker {
    /// Connections, each with `search_path` set to the schema.
    pool: PgPool,
    /// Commits concurrent enqueues together (group commit).
    enqueuer: enqueue::Enqueuer,
    /// Wake-ups: local waiters, the debounced NOTIFY, the listener.
    wake: Arc<notify::Wake>,
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
impl Broker for PostgresBroker {
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
        self.wake.wait(max).await;
    }

    fn max_idle_wait(&self) -> Duration {
        self.wake.max_idle_wait()
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
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(from_sqlx)
    }
}
