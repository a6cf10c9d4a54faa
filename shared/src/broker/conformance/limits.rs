//! Flow control checks: caps, tenant caps, rates and fair share, the same
//! on every backend.

use super::{LEASE, TestBroker, claim, claim_under, enqueue_one, job_of, request, state_of};
use crate::broker::{Completion, Outcome};
use crate::job::JobState;
use crate::limit::{Limits, TaskLimit, flow::parse_task_rate};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

fn limits(task: &str, limit: TaskLimit) -> Arc<Limits> {
    let mut map = BTreeMap::new();
    map.insert(task.to_owned(), limit);
    Arc::new(Limits::new(map))
}

fn cap(n: u32) -> TaskLimit {
    TaskLimit {
        concurrency: Some(n),
        ..TaskLimit::default()
    }
}

async fn succeed(t: &TestBroker, lease: crate::broker::Lease) {
    super::end_held(t, lease, Outcome::Succeeded(json!(null))).await;
}

/// A cap admits that many jobs of the task and no more; other tasks in the
/// same queue pass; a finished job frees its permit; a cap of 0 holds the
/// task; refused jobs spend no attempt.
pub async fn cap_bounds_running_jobs(t: TestBroker) {
    let mut capped = Vec::new();
    for _ in 0..5 {
        capped.push(enqueue_one(&t, request("capped", "default")).await);
    }
    let free = enqueue_one(&t, request("free", "default")).await;
    let held = enqueue_one(&t, request("held", "default")).await;
    let mut map = BTreeMap::new();
    map.insert("capped".to_owned(), cap(2));
    map.insert("held".to_owned(), cap(0));
    let l = Arc::new(Limits::new(map));

    let first = claim_under(&t, &["default"], 10, LEASE, &l).await;
    let tasks: Vec<&str> = first.iter().map(|c| c.task.as_str()).collect();
    assert_eq!(
        tasks.iter().filter(|t| **t == "capped").count(),
        2,
        "{tasks:?}"
    );
    assert!(
        first.iter().any(|c| c.lease.id == free.id),
        "another task passes the cap"
    );
    assert!(
        !first.iter().any(|c| c.lease.id == held.id),
        "a cap of 0 holds the task"
    );
    assert!(
        claim_under(&t, &["default"], 10, LEASE, &l)
            .await
            .is_empty(),
        "cap full"
    );

    for job in &capped {
        let j = job_of(&t, job.id).await;
        if j.state == JobState::Queued {
            assert_eq!(j.attempts, 0, "a refused job spends no attempt");
        }
    }
    let done = first
        .iter()
        .find(|c| c.task == "capped")
        .expect("a capped job");
    succeed(&t, done.lease).await;
    let next = claim_under(&t, &["default"], 10, LEASE, &l).await;
    assert_eq!(
        next.len(),
        1,
        "one permit freed, one job admitted: {next:?}"
    );
    assert_eq!(next[0].task, "capped");
    assert_eq!(next[0].lease.attempt, 1);
    assert_eq!(state_of(&t, held.id).await, JobState::Queued);
    // Raising the cap (a new configuration) admits more at once.
    let mut map = BTreeMap::new();
    map.insert("capped".to_owned(), cap(4));
    map.insert("held".to_owned(), cap(0));
    let raised = Arc::new(Limits::new(map));
    let more = claim_under(&t, &["default"], 10, LEASE, &raised).await;
    assert_eq!(more.len(), 2, "{more:?}");
    assert!(more.iter().all(|c| c.task == "capped"));
    // Dropping the limit lets the held task run.
    let rest = claim(&t, &["default"], 10, LEASE).await;
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].lease.id, held.id);
}

/// A tenant cap bounds each tenant separately.
pub async fn tenant_cap(t: TestBroker) {
    for tenant in ["t1", "t1", "t1", "t2", "t2"] {
        let mut r = request("index", "default");
        r.tenant = tenant.into();
        enqueue_one(&t, r).await;
    }
    let l = limits(
        "index",
        TaskLimit {
            tenant_concurrency: Some(1),
            ..TaskLimit::default()
        },
    );
    let got = claim_under(&t, &["default"], 10, LEASE, &l).await;
    let mut tenants: Vec<&str> = got.iter().map(|c| c.tenant.as_str()).collect();
    tenants.sort_unstable();
    assert_eq!(tenants, ["t1", "t2"], "one running job per tenant");
    let t1 = got.iter().find(|c| c.tenant == "t1").expect("t1");
    succeed(&t, t1.lease).await;
    let next = claim_under(&t, &["default"], 10, LEASE, &l).await;
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].tenant, "t1", "only t1 freed a permit");
}

/// A worker that dies keeps its permit only until its lease runs out; the
/// reaper frees it, and the stale worker's late ack frees nothing.
pub async fn permit_follows_the_lease(t: TestBroker) {
    for _ in 0..3 {
        enqueue_one(&t, request("capped", "default")).await;
    }
    let l = limits("capped", cap(1));
    let lost = claim_under(&t, &["default"], 1, Duration::from_millis(100), &l).await;
    assert_eq!(lost.len(), 1);
    assert!(claim_under(&t, &["default"], 5, LEASE, &l).await.is_empty());
    tokio::time::sleep(Duration::from_millis(250)).await;
    t.broker.maintain().await.expect("maintain");
    let next = claim_under(&t, &["default"], 5, LEASE, &l).await;
    assert_eq!(next.len(), 1, "the lapsed permit is free again");
    let stale = t
        .broker
        .complete(vec![Completion {
            lease: lost[0].lease,
            outcome: Outcome::Succeeded(json!(null)),
        }])
        .await
        .expect("complete");
    assert_eq!(stale.len(), 1, "the lost worker's ack is stale");
    assert!(
        claim_under(&t, &["default"], 5, LEASE, &l).await.is_empty(),
        "a stale ack does not free the new holder's permit"
    );
}

/// A rate spaces starts out; a throttled job waits queued, attempts untouched.
pub async fn rate_spaces_starts_without_attempts(t: TestBroker) {
    let mut jobs = Vec::new();
    for _ in 0..3 {
        jobs.push(enqueue_one(&t, request("mail", "default")).await);
    }
    let l = limits(
        "mail",
        TaskLimit {
            rate: Some(parse_task_rate("5/s").expect("rate")),
            ..TaskLimit::default()
        },
    );
    assert_eq!(claim_under(&t, &["default"], 10, LEASE, &l).await.len(), 1);
    assert!(
        claim_under(&t, &["default"], 10, LEASE, &l)
            .await
            .is_empty(),
        "throttled"
    );
    for job in &jobs[1..] {
        let j = job_of(&t, job.id).await;
        assert_eq!((j.state, j.attempts), (JobState::Queued, 0));
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        claim_under(&t, &["default"], 10, LEASE, &l).await.len(),
        1,
        "one more after one interval (200 ms)"
    );
    // Without the limit, the last job starts at once.
    assert_eq!(claim(&t, &["default"], 10, LEASE).await.len(), 1);
}

/// A tenant that arrives behind another's backlog is served in the current
/// round, not after the whole backlog; priority still orders within it.
pub async fn fair_share_across_tenants(t: TestBroker) {
    for _ in 0..20 {
        let mut r = request("work", "default");
        r.tenant = "a".into();
        enqueue_one(&t, r).await;
    }
    for c in claim(&t, &["default"], 5, LEASE).await {
        assert_eq!(c.tenant, "a");
    }
    for _ in 0..3 {
        let mut r = request("work", "default");
        r.tenant = "b".into();
        enqueue_one(&t, r).await;
    }
    let next = claim(&t, &["default"], 6, LEASE).await;
    let b = next.iter().filter(|c| c.tenant == "b").count();
    assert_eq!(b, 3, "all of b's jobs within the next round: {next:?}");
    let mut urgent = request("work", "default");
    urgent.tenant = "a".into();
    urgent.priority = 9;
    let urgent = enqueue_one(&t, urgent).await;
    assert_eq!(
        claim(&t, &["default"], 1, LEASE).await[0].lease.id,
        urgent.id
    );
}

/// Usage lists permit holders with their worker and what waits; position
/// counts the jobs ahead of a queued one.
pub async fn usage_and_position(t: TestBroker) {
    for _ in 0..3 {
        enqueue_one(&t, request("capped", "default")).await;
    }
    let limit = cap(1);
    let l = limits("capped", limit);
    let held = claim_under(&t, &["default"], 10, LEASE, &l).await;
    assert_eq!(held.len(), 1);
    let usage = t.broker.usage("capped", &limit).await.expect("usage");
    assert_eq!(usage.holders.len(), 1);
    assert_eq!(usage.holders[0].id, held[0].lease.id.to_string());
    assert_eq!(usage.holders[0].worker, "w1");
    assert_eq!(usage.waiting, 2);
    assert_eq!(usage.throttled_until, None);

    let a = enqueue_one(&t, request("free", "other")).await;
    enqueue_one(&t, request("free", "other")).await;
    let c = enqueue_one(&t, request("free", "other")).await;
    let mut high = request("free", "other");
    high.priority = 9;
    enqueue_one(&t, high).await;
    let pos = t.broker.position(&c).await.expect("position");
    assert_eq!((pos.ahead, pos.ahead_higher_priority), (3, 1));
    assert_eq!(t.broker.position(&a).await.expect("position").ahead, 1);
}

/// Jobs a limit held back run first, in their place, once the limit is
/// lifted, even while newer jobs keep the queue busy.
pub async fn lifting_a_limit_frees_waiting_jobs_at_once(t: TestBroker) {
    let mut capped = Vec::new();
    for _ in 0..3 {
        capped.push(enqueue_one(&t, request("capped", "default")).await.id);
    }
    let l = limits("capped", cap(1));
    assert_eq!(claim_under(&t, &["default"], 10, LEASE, &l).await.len(), 1);
    for _ in 0..5 {
        enqueue_one(&t, request("free", "default")).await;
    }
    let next = claim(&t, &["default"], 2, LEASE).await;
    let ids: Vec<_> = next.iter().map(|c| c.lease.id).collect();
    assert_eq!(ids, capped[1..], "the held jobs first, oldest first");
}
