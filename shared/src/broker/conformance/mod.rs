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

mod limits;
mod schedules;

pub use limits::*;
pub use schedules::*;

use super::{
    BrokerError, ClaimRequest, ClaimedJob, Completion, EnqueueRequest, ListRequest, Outcome, Scope,
    SharedBroker,
};
use crate::job::{JobState, Millis, now_ms};
use crate::node::{Slots, WorkerInfo};
use serde_json::{Value, json};
use std::time::Duration;

/// A broker for one test, and whatever keeps its storage alive.
pub struct TestBroker {
    /// The broker under test.
    pub broker: SharedBroker,
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
        tenant: "t1".into(),
        task: task.into(),
        queue: queue.into(),
        payload: json!({"n": 1}),
        priority: 5,
        run_at: None,
        max_retries: 3,
        timeout_ms: None,
        unique_key: None,
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
        })
        .await
        .expect("claim")
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

/// Enqueue, claim, acknowledge: the result is stored and the job is done.
pub async fn enqueue_claim_ack(t: TestBroker) {
    let job = enqueue_one(&t, request("weir.echo", "default")).await;
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.attempts, 0);
    let claimed = claim(&t, &["default"], 10, LEASE).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].lease.id, job.id);
    assert_eq!(claimed[0].lease.attempt, 1);
    assert_eq!(claimed[0].payload, json!({"n": 1}));
    assert_eq!(state_of(&t, job.id).await, JobState::Running);
    let stale = t
        .broker
        .complete(vec![Completion {
            lease: claimed[0].lease,
            outcome: Outcome::Succeeded(json!({"ok": true})),
        }])
        .await
        .expect("complete");
    assert!(stale.is_empty());
    let done = t
        .broker
        .get(&Scope::All, job.id)
        .await
        .expect("get")
        .expect("job");
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.result, json!({"ok": true}));
    assert_eq!(done.attempts, 1);
    assert!(done.started_at.is_some() && done.finished_at.is_some());
    assert!(claim(&t, &["default"], 10, LEASE).await.is_empty());
}

/// A failed attempt with a delay waits, then runs again as the next attempt.
pub async fn nack_with_delay(t: TestBroker) {
    let job = enqueue_one(&t, request("weir.fail", "default")).await;
    let c = claim(&t, &["default"], 1, LEASE).await.remove(0);
    t.broker
        .complete(vec![Completion {
            lease: c.lease,
            outcome: Outcome::Failed {
                error: "boom".into(),
                retry_in: Some(Duration::from_millis(300)),
            },
        }])
        .await
        .expect("complete");
    let waiting = t
        .broker
        .get(&Scope::All, job.id)
        .await
        .expect("get")
        .expect("job");
    assert_eq!(waiting.state, JobState::Retrying);
    assert_eq!(waiting.error.as_deref(), Some("boom"));
    assert!(
        claim(&t, &["default"], 1, LEASE).await.is_empty(),
        "not before its delay"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = claim(&t, &["default"], 1, LEASE).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].lease.attempt, 2);
}

/// A lease that runs out hands the job to the next claimer.
pub async fn lease_expiry_redelivers(t: TestBroker) {
    let job = enqueue_one(&t, request("weir.noop", "default")).await;
    let behind = enqueue_one(&t, request("weir.noop", "default")).await;
    let first = claim(&t, &["default"], 1, Duration::from_millis(100)).await;
    assert_eq!(first.len(), 1);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let report = t.broker.maintain().await.expect("maintain");
    assert_eq!(report.requeued, 1);
    assert_eq!(state_of(&t, job.id).await, JobState::Queued);
    let second = claim(&t, &["default"], 1, LEASE).await;
    assert_eq!(second.len(), 1);
    assert_eq!(
        second[0].lease.id, job.id,
        "back ahead of the job behind it"
    );
    assert_eq!(second[0].lease.attempt, 2);
    assert_eq!(state_of(&t, behind.id).await, JobState::Queued);
}

/// A worker that lost its lease cannot complete, renew or report progress.
pub async fn stale_ack_rejected(t: TestBroker) {
    let job = enqueue_one(&t, request("weir.noop", "default")).await;
    let old = claim(&t, &["default"], 1, Duration::from_millis(50))
        .await
        .remove(0);
    tokio::time::sleep(Duration::from_millis(150)).await;
    t.broker.maintain().await.expect("maintain");
    let new = claim(&t, &["default"], 1, LEASE).await.remove(0);
    assert_eq!(new.lease.attempt, old.lease.attempt + 1);

    let stale = t
        .broker
        .complete(vec![Completion {
            lease: old.lease,
            outcome: Outcome::Succeeded(json!("stale")),
        }])
        .await
        .expect("complete");
    assert_eq!(stale, vec![old.lease]);
    assert_eq!(
        t.broker.renew(&[old.lease], LEASE).await.expect("renew"),
        vec![old.lease]
    );
    assert!(
        !t.broker
            .set_progress(old.lease, json!(50))
            .await
            .expect("progress")
    );
    assert_eq!(state_of(&t, job.id).await, JobState::Running);

    assert!(
        t.broker
            .renew(&[new.lease], LEASE)
            .await
            .expect("renew")
            .is_empty()
    );
    assert!(
        t.broker
            .set_progress(new.lease, json!(50))
            .await
            .expect("progress")
    );
    let stale = t
        .broker
        .complete(vec![Completion {
            lease: new.lease,
            outcome: Outcome::Succeeded(json!("fresh")),
        }])
        .await
        .expect("complete");
    assert!(stale.is_empty());
    let done = t
        .broker
        .get(&Scope::All, job.id)
        .await
        .expect("get")
        .expect("job");
    assert_eq!(done.result, json!("fresh"));
    assert_eq!(done.progress, json!(50));
}

/// Higher priority first; first in, first out within a priority.
pub async fn priority_order(t: TestBroker) {
    let mut ids = Vec::new();
    for priority in [1, 9, 5, 9, 0] {
        let mut r = request("weir.noop", "default");
        r.priority = priority;
        ids.push(enqueue_one(&t, r).await.id);
    }
    let mut order = Vec::new();
    for _ in 0..5 {
        order.push(claim(&t, &["default"], 1, LEASE).await.remove(0).lease.id);
    }
    assert_eq!(order, vec![ids[1], ids[3], ids[2], ids[0], ids[4]]);
    // A batch claim comes out in the same order.
    let mut batch_ids = Vec::new();
    for priority in [2, 7] {
        let mut r = request("weir.noop", "default");
        r.priority = priority;
        batch_ids.push(enqueue_one(&t, r).await.id);
    }
    let batch: Vec<_> = claim(&t, &["default"], 10, LEASE)
        .await
        .into_iter()
        .map(|c| c.lease.id)
        .collect();
    assert_eq!(batch, vec![batch_ids[1], batch_ids[0]]);
}

/// Queues are drained in the order the claim names them (strict order; a
/// weighted worker draws that order per claim), and never past the limit.
pub async fn queue_order_and_limit(t: TestBroker) {
    let a = enqueue_one(&t, request("weir.noop", "a")).await;
    let b1 = enqueue_one(&t, request("weir.noop", "b")).await;
    let b2 = enqueue_one(&t, request("weir.noop", "b")).await;
    let first = claim(&t, &["b", "a"], 1, LEASE).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].lease.id, b1.id);
    let rest: Vec<_> = claim(&t, &["b", "a"], 5, LEASE)
        .await
        .into_iter()
        .map(|c| c.lease.id)
        .collect();
    assert_eq!(rest, vec![b2.id, a.id]);
    for _ in 0..10 {
        enqueue_one(&t, request("weir.noop", "c")).await;
    }
    assert_eq!(claim(&t, &["c"], 3, LEASE).await.len(), 3);
    assert!(claim(&t, &["c"], 0, LEASE).await.is_empty());
    assert!(claim(&t, &["elsewhere"], 3, LEASE).await.is_empty());
}

/// A delayed job is `scheduled` until due, then claimable.
pub async fn delayed_promotion(t: TestBroker) {
    let mut r = request("weir.noop", "default");
    r.run_at = Some(Millis(now_ms().0 + 300));
    let job = enqueue_one(&t, r).await;
    assert_eq!(job.state, JobState::Scheduled);
    assert!(claim(&t, &["default"], 1, LEASE).await.is_empty());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let report = t.broker.maintain().await.expect("maintain");
    assert_eq!(report.promoted, 1);
    assert_eq!(state_of(&t, job.id).await, JobState::Queued);
    assert_eq!(claim(&t, &["default"], 1, LEASE).await.len(), 1);
}

/// A unique key is held by one unfinished job per tenant and task.
pub async fn unique_keys(t: TestBroker) {
    let keyed = |tenant: &str, task: &str| {
        let mut r = request(task, "default");
        r.tenant = tenant.into();
        r.unique_key = Some("k1".into());
        r
    };
    let out = t
        .broker
        .enqueue(vec![keyed("t1", "weir.noop"), keyed("t1", "weir.noop")])
        .await
        .expect("enqueue");
    assert!(out[0].created);
    assert!(
        !out[1].created,
        "a duplicate in the same batch is not added"
    );
    assert_eq!(out[0].job.id, out[1].job.id);
    let again = t
        .broker
        .enqueue(vec![keyed("t1", "weir.noop")])
        .await
        .expect("enqueue");
    assert!(!again[0].created);
    assert_eq!(again[0].job.id, out[0].job.id);
    let other_tenant = t
        .broker
        .enqueue(vec![keyed("t2", "weir.noop")])
        .await
        .expect("enqueue");
    assert!(other_tenant[0].created);
    let other_task = t
        .broker
        .enqueue(vec![keyed("t1", "weir.echo")])
        .await
        .expect("enqueue");
    assert!(other_task[0].created);

    // Once the holder finishes, the key is free again.
    let c = claim(&t, &["default"], 10, LEASE).await;
    let holder = c
        .iter()
        .find(|c| c.lease.id == out[0].job.id)
        .expect("claimed");
    t.broker
        .complete(vec![Completion {
            lease: holder.lease,
            outcome: Outcome::Succeeded(Value::Null),
        }])
        .await
        .expect("complete");
    let fresh = t
        .broker
        .enqueue(vec![keyed("t1", "weir.noop")])
        .await
        .expect("enqueue");
    assert!(fresh[0].created);
    assert_ne!(fresh[0].job.id, out[0].job.id);
}

/// One batch mixing tasks, queues, priorities, delays, timeouts and
/// unique keys: every job is stored as asked, reads back as enqueue
/// answered, and is claimed in priority, then batch, order.
pub async fn mixed_batch(t: TestBroker) {
    let later = Millis(crate::job::now_ms().0 + 3_600_000);
    let requests: Vec<EnqueueRequest> = (0..9)
        .map(|n| {
            let mut r = request("weir.noop", "default");
            r.payload = json!({"n": n});
            match n {
                2 => {
                    r.task = "weir.echo".into();
                    r.priority = 9;
                }
                3 => {
                    r.queue = "mail".into();
                    r.run_at = Some(later);
                }
                // Any text is a valid key, a line break included.
                4 | 5 => r.unique_key = Some("order 7\nline 2".into()),
                6 => r.timeout_ms = Some(5_000),
                7 => r.max_retries = 0,
                _ => {}
            }
            r
        })
        .collect();
    let out = t.broker.enqueue(requests.clone()).await.expect("enqueue");
    assert_eq!(out.len(), requests.len());
    for (n, (e, r)) in out.iter().zip(&requests).enumerate() {
        assert_eq!(
            e.created,
            n != 5,
            "job {n}: only the second unique job is not added"
        );
        if n == 5 {
            assert_eq!(e.job.id, out[4].job.id, "the holder of the unique key");
            continue;
        }
        let stored = job_of(&t, e.job.id).await;
        assert_eq!(stored, e.job, "job {n} reads back as enqueue answered it");
        assert_eq!(stored.task, r.task);
        assert_eq!(stored.queue, r.queue);
        assert_eq!(stored.priority, r.priority);
        assert_eq!(stored.payload, r.payload);
        assert_eq!(stored.max_retries, r.max_retries);
        assert_eq!(stored.timeout_ms, r.timeout_ms);
        assert_eq!(stored.unique_key, r.unique_key);
        assert_eq!(stored.attempts, 0);
        if n == 3 {
            assert_eq!(stored.state, JobState::Scheduled);
            assert!(
                stored.run_at >= later,
                "run_at {:?} < {later:?}",
                stored.run_at
            );
        } else {
            assert_eq!(stored.state, JobState::Queued);
            assert_eq!(stored.run_at, stored.created_at);
        }
    }
    let order: Vec<_> = claim(&t, &["default"], 20, LEASE)
        .await
        .iter()
        .map(|c| c.payload["n"].clone())
        .collect();
    assert_eq!(order, [2, 0, 1, 4, 6, 7, 8].map(|n| json!(n)));
    assert!(claim(&t, &["mail"], 20, LEASE).await.is_empty());
}

/// Nothing is claimed from a paused queue; resuming releases its jobs.
pub async fn pause_and_resume(t: TestBroker) {
    enqueue_one(&t, request("weir.noop", "mail")).await;
    t.broker.set_paused("mail", true).await.expect("pause");
    assert!(claim(&t, &["mail"], 5, LEASE).await.is_empty());
    let counts = t.broker.queue_counts().await.expect("counts");
    let mail = counts
        .iter()
        .find(|q| q.name == "mail")
        .expect("mail listed");
    assert!(mail.paused);
    assert_eq!(mail.counts.get(&JobState::Queued), Some(&1));
    t.broker.set_paused("mail", false).await.expect("resume");
    assert_eq!(claim(&t, &["mail"], 5, LEASE).await.len(), 1);
}

/// Cancelling a waiting job removes it from the queue; a second cancel is a conflict.
pub async fn cancel_scheduled(t: TestBroker) {
    let mut r = request("weir.noop", "default");
    r.run_at = Some(Millis(now_ms().0 + 60_000));
    let job = enqueue_one(&t, r).await;
    let cancelled = t.broker.cancel(&Scope::All, job.id).await.expect("cancel");
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert!(cancelled.finished_at.is_some());
    assert!(matches!(
        t.broker.cancel(&Scope::All, job.id).await,
        Err(BrokerError::Conflict(JobState::Cancelled))
    ));
    let queued = enqueue_one(&t, request("weir.noop", "default")).await;
    t.broker
        .cancel(&Scope::All, queued.id)
        .await
        .expect("cancel");
    assert!(claim(&t, &["default"], 5, LEASE).await.is_empty());
}

/// Cancelling a running job withdraws its lease: the worker learns at its
/// next renewal, and its late completion changes nothing.
pub async fn cancel_running(t: TestBroker) {
    let job = enqueue_one(&t, request("weir.sleep", "default")).await;
    let c = claim(&t, &["default"], 1, LEASE).await.remove(0);
    let cancelled = t.broker.cancel(&Scope::All, job.id).await.expect("cancel");
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(
        t.broker.renew(&[c.lease], LEASE).await.expect("renew"),
        vec![c.lease]
    );
    let stale = t
        .broker
        .complete(vec![Completion {
            lease: c.lease,
            outcome: Outcome::Succeeded(Value::Null),
        }])
        .await
        .expect("complete");
    assert_eq!(stale, vec![c.lease]);
    assert_eq!(state_of(&t, job.id).await, JobState::Cancelled);
}

/// Retries run out into `failed` (the dead letters); a person can replay it.
pub async fn dead_letters_and_replay(t: TestBroker) {
    let mut r = request("weir.fail", "default");
    r.max_retries = 1;
    let job = enqueue_one(&t, r).await;
    for attempt in 1..=2 {
        let c = claim(&t, &["default"], 1, LEASE).await.remove(0);
        assert_eq!(c.lease.attempt, attempt);
        assert_eq!(c.retries_left, 2 - attempt);
        t.broker
            .complete(vec![Completion {
                lease: c.lease,
                outcome: Outcome::Failed {
                    error: format!("failure {attempt}"),
                    retry_in: Some(Duration::ZERO),
                },
            }])
            .await
            .expect("complete");
    }
    let dead = t
        .broker
        .get(&Scope::All, job.id)
        .await
        .expect("get")
        .expect("job");
    assert_eq!(dead.state, JobState::Failed);
    assert_eq!(dead.attempts, 2);
    assert_eq!(dead.error.as_deref(), Some("failure 2"));
    assert!(claim(&t, &["default"], 1, LEASE).await.is_empty());

    let replayed = t.broker.retry(&Scope::All, job.id).await.expect("retry");
    assert_eq!(replayed.state, JobState::Queued);
    let c = claim(&t, &["default"], 1, LEASE).await.remove(0);
    assert_eq!(c.lease.attempt, 3, "the fencing token keeps counting");
    assert_eq!(c.retries_left, 1, "a replay gets a fresh retry budget");
    assert!(matches!(
        t.broker.retry(&Scope::All, job.id).await,
        Err(BrokerError::Conflict(JobState::Running))
    ));

    // A non-retryable failure is dead at once.
    let job = enqueue_one(&t, request("weir.fail", "other")).await;
    let c = claim(&t, &["other"], 1, LEASE).await.remove(0);
    t.broker
        .complete(vec![Completion {
            lease: c.lease,
            outcome: Outcome::Failed {
                error: "unknown task".into(),
                retry_in: None,
            },
        }])
        .await
        .expect("complete");
    assert_eq!(state_of(&t, job.id).await, JobState::Failed);
}

/// A job whose worker keeps dying ends in the dead letters: attempts count at claim.
pub async fn crash_loop_ends_dead(t: TestBroker) {
    let mut r = request("weir.noop", "default");
    r.max_retries = 1;
    let job = enqueue_one(&t, r).await;
    for _ in 0..2 {
        assert_eq!(
            claim(&t, &["default"], 1, Duration::from_millis(30))
                .await
                .len(),
            1
        );
        tokio::time::sleep(Duration::from_millis(80)).await;
        t.broker.maintain().await.expect("maintain");
    }
    let dead = t
        .broker
        .get(&Scope::All, job.id)
        .await
        .expect("get")
        .expect("job");
    assert_eq!(dead.state, JobState::Failed);
    assert!(dead.error.unwrap_or_default().contains("lease expired"));
}

/// A job handed back at shutdown is queued at once and keeps its retry budget.
pub async fn release_returns_without_spending(t: TestBroker) {
    let mut r = request("weir.noop", "default");
    r.max_retries = 0;
    let job = enqueue_one(&t, r).await;
    let behind = enqueue_one(&t, request("weir.noop", "default")).await;
    let c = claim(&t, &["default"], 1, LEASE).await.remove(0);
    assert_eq!(c.lease.id, job.id);
    assert_eq!(c.retries_left, 0);
    t.broker
        .complete(vec![Completion {
            lease: c.lease,
            outcome: Outcome::Released,
        }])
        .await
        .expect("release");
    assert_eq!(state_of(&t, job.id).await, JobState::Queued);
    let again = claim(&t, &["default"], 1, LEASE).await.remove(0);
    assert_eq!(again.lease.id, job.id, "back ahead of the job behind it");
    assert_eq!(again.lease.attempt, 2);
    assert_eq!(
        again.retries_left, 0,
        "the interrupted attempt was given back"
    );
    assert_eq!(state_of(&t, behind.id).await, JobState::Queued);
}

/// Listing is newest first with a cursor, and every read is scoped to a tenant.
pub async fn list_and_scope(t: TestBroker) {
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut r = request("weir.noop", "default");
        r.tenant = if i == 2 { "t2".into() } else { "t1".into() };
        ids.push(enqueue_one(&t, r).await.id);
    }
    let mine = Scope::Tenant("t1".into());
    let page = t
        .broker
        .list(ListRequest {
            scope: mine.clone(),
            queue: None,
            state: None,
            task: None,
            limit: 2,
            cursor: None,
        })
        .await
        .expect("list");
    assert_eq!(
        page.data.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[4], ids[3]]
    );
    assert!(page.has_more);
    let next = t
        .broker
        .list(ListRequest {
            scope: mine.clone(),
            queue: None,
            state: None,
            task: None,
            limit: 2,
            cursor: page.next_cursor,
        })
        .await
        .expect("list");
    assert_eq!(
        next.data.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[1], ids[0]]
    );
    assert!(!next.has_more);
    assert_eq!(next.next_cursor, None);
    let filtered = t
        .broker
        .list(ListRequest {
            scope: Scope::All,
            queue: Some("default".into()),
            state: Some(JobState::Queued),
            task: Some("weir.noop".into()),
            limit: 50,
            cursor: None,
        })
        .await
        .expect("list");
    assert_eq!(filtered.data.len(), 5);

    assert!(t.broker.get(&mine, ids[2]).await.expect("get").is_none());
    assert!(matches!(
        t.broker.cancel(&mine, ids[2]).await,
        Err(BrokerError::NotFound)
    ));
    assert!(matches!(
        t.broker.retry(&mine, ids[2]).await,
        Err(BrokerError::NotFound)
    ));
    assert!(
        t.broker
            .get(&Scope::Tenant("t2".into()), ids[2])
            .await
            .expect("get")
            .is_some()
    );
}

/// Counts per queue and state; purge empties the waiting jobs only.
pub async fn counts_and_purge(t: TestBroker) {
    for _ in 0..3 {
        enqueue_one(&t, request("weir.noop", "dataset")).await;
    }
    let mut later = request("weir.noop", "dataset");
    later.run_at = Some(Millis(now_ms().0 + 60_000));
    enqueue_one(&t, later).await;
    claim(&t, &["dataset"], 1, LEASE).await;
    let counts = t.broker.queue_counts().await.expect("counts");
    let q = counts.iter().find(|q| q.name == "dataset").expect("listed");
    assert_eq!(q.counts.get(&JobState::Queued), Some(&2));
    assert_eq!(q.counts.get(&JobState::Scheduled), Some(&1));
    assert_eq!(q.counts.get(&JobState::Running), Some(&1));
    assert_eq!(t.broker.purge("dataset").await.expect("purge"), 3);
    let counts = t.broker.queue_counts().await.expect("counts");
    let q = counts.iter().find(|q| q.name == "dataset").expect("listed");
    assert_eq!(q.counts.get(&JobState::Queued), None);
    assert_eq!(q.counts.get(&JobState::Running), Some(&1));
}

/// Worker nodes are listed while their heartbeat lasts; an empty broker
/// answers every inspection with nothing rather than an error.
pub async fn heartbeats(t: TestBroker) {
    assert!(t.broker.queue_counts().await.expect("counts").is_empty());
    assert!(t.broker.workers().await.expect("workers").is_empty());
    assert!(t.broker.renew(&[], LEASE).await.expect("renew").is_empty());
    assert_eq!(t.broker.purge("default").await.expect("purge"), 0);
    let page = t
        .broker
        .list(ListRequest {
            scope: Scope::All,
            queue: None,
            state: None,
            task: None,
            limit: 10,
            cursor: None,
        })
        .await
        .expect("list");
    assert!(page.data.is_empty() && !page.has_more);
    let info = WorkerInfo {
        id: "node-1".into(),
        host: "h".into(),
        pid: 1,
        queues: vec!["default".into()],
        slots: Slots {
            busy: 0,
            current: 2,
            min: 2,
            max: 2,
        },
        processed: 7,
        started_at: now_ms(),
        last_heartbeat: now_ms(),
        children: Vec::new(),
        recycles: 0,
        restarts: 0,
        config: Default::default(),
        scaling: Vec::new(),
        child_ready_ms: None,
    };
    t.broker
        .heartbeat(&info, Duration::from_millis(200))
        .await
        .expect("heartbeat");
    let listed = t.broker.workers().await.expect("workers");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].processed, 7);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(t.broker.workers().await.expect("workers").is_empty());
    t.broker
        .heartbeat(&info, Duration::from_secs(10))
        .await
        .expect("heartbeat");
    t.broker.remove_worker("node-1").await.expect("remove");
    assert!(t.broker.workers().await.expect("workers").is_empty());
    t.broker.ping().await.expect("ping");
}

/// Generates one `#[tokio::test]` per conformance check for a backend.
/// `$make` is a future yielding `Option<TestBroker>`: `None` skips the test
/// (a service that is not reachable outside CI; see [`service_url`]).
#[macro_export]
macro_rules! broker_conformance {
    ($make:expr) => {
        $crate::broker_conformance!(@tests $make;
            enqueue_claim_ack, nack_with_delay, lease_expiry_redelivers,
            stale_ack_rejected, priority_order, queue_order_and_limit,
            delayed_promotion, unique_keys, mixed_batch, pause_and_resume, cancel_scheduled,
            cancel_running, dead_letters_and_replay, crash_loop_ends_dead,
            release_returns_without_spending, list_and_scope, counts_and_purge,
            heartbeats, cap_bounds_running_jobs, tenant_cap, permit_follows_the_lease,
            rate_spaces_starts_without_attempts, fair_share_across_tenants,
            usage_and_position, ticks_fire_once, lifting_a_limit_frees_waiting_jobs_at_once);
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
