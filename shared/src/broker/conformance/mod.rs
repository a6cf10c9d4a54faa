//! The broker conformance suite: one set of checks every backend must pass.
//! Changing a backend means extending this suite, never special-casing it.
//!
//! Usage, in a backend's test file:
//!
//! ```ignore
//! weir_shared::broker_conformance!(async { my_test_broker().await });
//! ```
//!
//! where the expression yields `Option<TestBroker>`, isolated from every other
//! test (its own file, key prefix or schema), so the tests run in parallel.

mod bulk;
pub mod coordination;
mod jobs;
mod limits;
mod retention;
mod schedules;
mod serial;
mod views;
mod workflows;

pub use bulk::*;
pub use jobs::*;
pub use limits::*;
pub use retention::*;
pub use schedules::*;
pub use serial::*;
pub use views::*;
pub use workflows::*;

use super::{ClaimRequest, ClaimedJob, EnqueueRequest, Scope, SharedBroker};
use crate::job::JobState;
use serde_json::json;
use std::time::Duration;

/// Opens a handle on a test's storage with a retention.
pub type Reopen = Box<
    dyn Fn(crate::broker::Retention) -> futures::future::BoxFuture<'static, SharedBroker>
        + Send
        + Sync,
>;

/// A broker for one test, and whatever keeps its storage alive.
pub struct TestBroker {
    /// The broker under test.
    pub broker: SharedBroker,
    /// A second handle on the same storage, opened as another process
    /// would open it (the coordination suite checks sharing with it).
    pub peer: SharedBroker,
    /// Opens one more handle on the same storage that keeps finished jobs
    /// as the given retention says (the retention checks use it).
    pub reopen: Reopen,
    /// Dropped at the end of the test (a temp dir, a prefix cleaner...).
    pub guard: Box<dyn Send + Sync>,
}

const LEASE: Duration = Duration::from_secs(30);

/// The URL of a service a test needs, from `var` or `default`, if it
/// answers on TCP. Outside CI an unreachable service skips the test with a
/// note; with `CI=true` it is a failure, never a silent skip.
pub fn service_url(var: &str, default: &str) -> Option<String> {
    let url = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    let host_port = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.rsplit('@').next())
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("127.0.0.1:0")
        .to_owned();
    let reachable = std::net::TcpStream::connect_timeout(
        &host_port
            .parse()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        Duration::from_secs(2),
    )
    .is_ok();
    if reachable {
        return Some(url);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{var}: {url} is unreachable, and CI=true does not skip tests");
    }
    eprintln!("skipped: {url} ({var}) is unreachable");
    None
}

/// A request for `task` on `queue` with the defaults a test needs.
pub fn request(task: &str, queue: &str) -> EnqueueRequest {
    EnqueueRequest {
        id: None,
        tenant: "t1".into(),
        task: task.into(),
        queue: queue.into(),
        payload: json!({"n": 1}),
        priority: 5,
        run_at: None,
        max_retries: 3,
        timeout_ms: None,
        unique_key: None,
        serial_key: None,
    }
}

async fn enqueue_one(t: &TestBroker, r: EnqueueRequest) -> crate::job::Job {
    let mut out = t.broker.enqueue(vec![r]).await.expect("enqueue");
    out.remove(0).job
}

async fn claim(t: &TestBroker, queues: &[&str], limit: usize, lease: Duration) -> Vec<ClaimedJob> {
    claim_under(t, queues, limit, lease, &std::sync::Arc::default()).await
}

async fn claim_under(
    t: &TestBroker,
    queues: &[&str],
    limit: usize,
    lease: Duration,
    limits: &std::sync::Arc<crate::limit::Limits>,
) -> Vec<ClaimedJob> {
    t.broker
        .claim(ClaimRequest {
            worker: "w1".into(),
            queues: queues.iter().map(|q| q.to_string()).collect(),
            limit,
            lease,
            limits: limits.clone(),
            tasks: None,
        })
        .await
        .expect("claim")
}

/// Ends an attempt whose lease is held with `outcome`.
async fn end_held(t: &TestBroker, lease: super::Lease, outcome: super::Outcome) {
    let stale = t
        .broker
        .complete(vec![super::Completion { lease, outcome }])
        .await
        .expect("complete");
    assert!(stale.is_empty(), "the lease was held");
}

/// The stored job, which must exist.
async fn job_of(t: &TestBroker, id: crate::job::JobId) -> crate::job::Job {
    t.broker
        .get(&Scope::All, id)
        .await
        .expect("get")
        .expect("job exists")
}

async fn state_of(t: &TestBroker, id: crate::job::JobId) -> JobState {
    job_of(t, id).await.state
}

/// Generates one `#[tokio::test]` per conformance check for a backend.
/// `$make` is a future yielding `Option<TestBroker>`: `None` skips the test
/// (a service that is not reachable outside CI; see [`service_url`]).
#[macro_export]
macro_rules! broker_conformance {
    ($make:expr) => {
        $crate::broker_conformance!(@tests $make;
            enqueue_claim_ack, complete_and_claim_acknowledges_then_claims, nack_with_delay, lease_expiry_redelivers,
            stale_ack_rejected, priority_order, queue_order_and_limit,
            delayed_promotion, unique_keys, explicit_ids_enqueue_once, mixed_batch, pause_and_resume, cancel_scheduled,
            cancel_running, dead_letters_and_replay, crash_loop_ends_dead,
            release_returns_without_spending, list_and_scope, list_scan_is_bounded, counts_and_purge,
            retention_per_outcome, retention_keeps_at_most_n, claims_only_handled_tasks,
            attempt_history_is_kept, attempt_history_is_bounded, bulk_dead_letters,
            heartbeats, cap_bounds_running_jobs, tenant_cap, permit_follows_the_lease,
            rate_spaces_starts_without_attempts, fair_share_across_tenants,
            usage_and_position, ticks_fire_once, lifting_a_limit_frees_waiting_jobs_at_once,
            serial_one_at_a_time_in_order, serial_retry_keeps_place,
            serial_survives_crash_cancel_and_caps, snooze_gives_the_attempt_back_and_keeps_the_lane,
            queue_heads_name_the_next_job,
            workflow_waits_for_last_parent, workflow_submit_validates_atomically,
            workflow_results_reach_children, workflow_failure_cancels_descendants,
            workflow_failure_skip_lets_grandchildren_run, workflow_failure_run_still_runs,
            workflow_cancel_cascades, workflow_retry_keeps_succeeded,
            workflow_parent_crash_still_releases, waiting_is_counted_and_listed,
            workflow_step_joins_its_lane_when_released, workflow_spawned_steps_join_the_dag,
            workflow_spawn_survives_a_crash_and_failures);
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                if let Some(broker) = $make.await {
                    $crate::broker::conformance::$name(broker).await;
                }
            }
        )*
    };
}
