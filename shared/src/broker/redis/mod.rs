//! The Redis broker: the shared broker of a distributed deployment.
//!
//! A job stays in Redis until it is acknowledged. Every state change is one
//! Lua script (in `lua/`, sent once and then run by SHA), so a crash of any
//! client at any moment leaves each job in exactly one state. Scripts take
//! the time from Redis (`TIME`), so the clocks of API and worker hosts do
//! not matter. Leases live in a per-queue `running` set scored by their
//! deadline; the (job id, attempt) pair fences renewals and completions.
//!
//! Keys live under `WEIR_REDIS_PREFIX` (default `weir`). One queue's sets
//! share the hash tag `{q:NAME}`, so on Redis Cluster they would sit in one
//! slot; job hashes (`PREFIX:j:ID`, found by id alone), unique keys, listing
//! indexes and the queue registry are outside that tag, and the scripts
//! touch them together, so weir needs a single Redis primary (with replicas
//! or Sentinel), not a Cluster.
//!
//! Retention: finished jobs expire after their outcome's retention
//! (`broker/retention.rs`: the hash's own TTL, set when the job ends) and
//! beyond `WEIR_RETENTION_KEEP` per queue and outcome (maintenance), so
//! memory stays bounded by the work of that window.

mod admin;
mod claim;
#[cfg(feature = "testkit")]
mod cleanup;
mod codec;
mod complete;
pub mod config;
mod connect;
mod coord;
mod cron;
mod enqueue;
mod inspect;
mod nodes;
mod scripts;
#[cfg(all(test, feature = "testkit"))]
mod tests;
mod workflow;

#[cfg(feature = "testkit")]
pub use cleanup::PrefixCleanup;
pub use config::RedisConfig;

use crate::broker::{
    Broker, BrokerResult, ClaimRequest, ClaimedJob, Completion, EnqueueRequest, Enqueued, Lease,
    Maintenance, Scope,
};
use crate::job::{Job, JobId};
use crate::workflow::{
    ParentOutcome, Spawn, Workflow, WorkflowListRequest, WorkflowPage, WorkflowRequest,
};
use async_trait::async_trait;
use connect::from_redis;
use redis::aio::ConnectionManager;
use scripts::Scripts;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::sync::Notify;

/// The Redis broker.
#[derive(Clone)]
pub struct RedisBroker {
    conn: ConnectionManager,
    client: redis::Client,
    prefix: Arc<str>,
    retention: crate::broker::Retention,
    scripts: Arc<Scripts>,
    /// Woken by the `PREFIX:wake` channel when a queue gets work.
    wake: Arc<Notify>,
    listening: Arc<AtomicBool>,
    /// When this handle last audited waiting workflow steps.
    audits: Arc<crate::broker::maintain::Audits>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn enqueue(&self, jobs: Vec<EnqueueRequest>) -> BrokerResult<Vec<Enqueued>> {
        self.enqueue_jobs(jobs).await
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

    async fn set_progress(&self, lease: Lease, progress: Value) -> BrokerResult<bool> {
        self.store_progress(lease, progress).await
    }

    async fn cancel(&self, scope: &Scope, id: JobId) -> BrokerResult<Job> {
        self.cancel_job(scope, id).await
    }

    async fn maintain(&self) -> BrokerResult<Maintenance> {
        self.maintain_pass().await
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
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(from_redis)
    }

    async fn wait_for_work(&self, max: Duration) {
        self.listen();
        let _ = tokio::time::timeout(max, self.wake.notified()).await;
    }
}
