//! Serial key checks: the jobs of one tenant with one serial key run one
//! at a time, in enqueue order, through retries, crashes, cancels and
//! caps, the same on every backend.

use super::{
    LEASE, TestBroker, claim, claim_under, end_held, enqueue_one, job_of, request, state_of,
};
use crate::broker::{EnqueueRequest, Outcome, Scope};
use crate::job::{JobId, JobState};
use crate::limit::{Limits, TaskLimit};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

fn keyed(tenant: &str, key: &str, priority: u8) -> EnqueueRequest {
    let mut r = request("store", "default");
    r.tenant = tenant.into();
    r.serial_key = Some(key.into());
    r.priority = priority;
    r
}

fn ids(claimed: &[crate::broker::ClaimedJob]) -> Vec<JobId> {
    claimed.iter().map(|c| c.lease.id).collect()
}

/// Only a lane's head is claimable; each end lets exactly the next one in
/// enqueue order start, whatever the priorities; another tenant's lane of
/// the same key and jobs without a key run beside it.
pub async fn serial_one_at_a_time_in_order(t: TestBroker) {
    let a = enqueue_one(&t, keyed("t1", "k", 1)).await;
    let b = enqueue_one(&t, keyed("t1", "k", 9)).await;
    let c = enqueue_one(&t, keyed("t1", "k", 5)).await;
    let free = enqueue_one(&t, request("other", "default")).await;
    let other_lane = enqueue_one(&t, keyed("t2", "k", 5)).await;
    assert_eq!(a.serial_key.as_deref(), Some("k"));
    assert_eq!(
        state_of(&t, b.id).await,
        JobState::Queued,
        "a waiting member is queued"
    );
    let place = t
        .broker
        .position(&job_of(&t, c.id).await)
        .await
        .expect("position");
    assert_eq!(
        place.serial_ahead, 2,
        "explain can say how many are ahead in the lane"
    );

    let first = claim(&t, &["default"], 10, LEASE).await;
    let mut got = ids(&first);
    got.sort();
    let mut want = vec![a.id, free.id, other_lane.id];
    want.sort();
    assert_eq!(got, want, "the heads and the unkeyed job, nothing else");
    assert!(claim(&t, &["default"], 10, LEASE).await.is_empty());

    let lease_a = first.iter().find(|c| c.lease.id == a.id).expect("a").lease;
    end_held(&t, lease_a, Outcome::Succeeded(json!(1))).await;
    let next = claim(&t, &["default"], 10, LEASE).await;
    assert_eq!(
        ids(&next),
        vec![b.id],
        "the next in enqueue order, not by priority"
    );
    end_held(&t, next[0].lease, Outcome::Succeeded(json!(2))).await;
    let last = claim(&t, &["default"], 10, LEASE).await;
    assert_eq!(ids(&last), vec![c.id]);
    let job = t
        .broker
        .get(&Scope::All, c.id)
        .await
        .expect("get")
        .expect("job");
    assert_eq!(
        job.serial_key.as_deref(),
        Some("k"),
        "the job shows its key"
    );
}

/// A head that fails with a retry keeps its place: the next member waits
/// through the backoff and runs after the head's second attempt.
pub async fn serial_retry_keeps_place(t: TestBroker) {
    let a = enqueue_one(&t, keyed("t1", "k", 5)).await;
    let b = enqueue_one(&t, keyed("t1", "k", 5)).await;
    let first = claim(&t, &["default"], 10, LEASE).await;
    assert_eq!(ids(&first), vec![a.id]);
    end_held(
        &t,
        first[0].lease,
        Outcome::Failed {
            error: "boom".into(),
            retry_in: Some(Duration::from_millis(200)),
        },
    )
    .await;
    assert!(
        claim(&t, &["default"], 10, LEASE).await.is_empty(),
        "the second member waits while the head backs off"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    t.broker.maintain().await.expect("maintain");
    let again = claim(&t, &["default"], 10, LEASE).await;
    assert_eq!(ids(&again), vec![a.id], "the head runs again first");
    assert_eq!(again[0].lease.attempt, 2);
    end_held(&t, again[0].lease, Outcome::Succeeded(json!(null))).await;
    let next = claim(&t, &["default"], 10, LEASE).await;
    assert_eq!(ids(&next), vec![b.id]);
}

/// A head whose worker died is still the head when its lease is reaped;
/// cancelling the head frees the next; a head a cap of 0 holds keeps the
/// lane waiting (the next is never taken instead), and lifting the cap
/// starts it.
pub async fn serial_survives_crash_cancel_and_caps(t: TestBroker) {
    let a = enqueue_one(&t, keyed("t1", "k", 5)).await;
    let b = enqueue_one(&t, keyed("t1", "k", 5)).await;
    let c = enqueue_one(&t, keyed("t1", "k", 5)).await;
    let lost = claim(&t, &["default"], 10, Duration::from_millis(100)).await;
    assert_eq!(ids(&lost), vec![a.id]);
    tokio::time::sleep(Duration::from_millis(250)).await;
    t.broker.maintain().await.expect("maintain");
    let again = claim(&t, &["default"], 10, LEASE).await;
    assert_eq!(ids(&again), vec![a.id], "the reaped head is still the head");

    let cancelled = t.broker.cancel(&Scope::All, a.id).await.expect("cancel");
    assert_eq!(cancelled.state, JobState::Cancelled);
    let mut map = BTreeMap::new();
    map.insert(
        "store".to_owned(),
        TaskLimit {
            concurrency: Some(0),
            ..TaskLimit::default()
        },
    );
    let closed = Arc::new(Limits::new(map));
    assert!(
        claim_under(&t, &["default"], 10, LEASE, &closed)
            .await
            .is_empty(),
        "the new head is held by the cap, and the lane waits"
    );
    let open = claim(&t, &["default"], 10, LEASE).await;
    assert_eq!(ids(&open), vec![b.id], "lifting the cap starts the head");
    end_held(&t, open[0].lease, Outcome::Succeeded(json!(null))).await;
    let last = claim(&t, &["default"], 10, LEASE).await;
    assert_eq!(ids(&last), vec![c.id]);
}

/// A snoozed head (every provider key cooling) waits its delay as
/// `retrying` with the reason as its error, gets its attempt back (a
/// job allowed one retry still has it), and keeps its lane: the next
/// member does not start meanwhile.
pub async fn snooze_gives_the_attempt_back_and_keeps_the_lane(t: TestBroker) {
    let mut head = keyed("t1", "k", 5);
    head.max_retries = 1;
    let a = enqueue_one(&t, head).await;
    let b = enqueue_one(&t, keyed("t1", "k", 5)).await;
    let first = claim(&t, &["default"], 10, LEASE).await;
    assert_eq!(ids(&first), vec![a.id]);
    end_held(
        &t,
        first[0].lease,
        Outcome::Snoozed {
            reason: "waiting for a key of `openai`".into(),
            delay: Duration::from_millis(200),
        },
    )
    .await;
    let waiting = job_of(&t, a.id).await;
    assert_eq!(waiting.state, JobState::Retrying);
    assert_eq!(
        waiting.error.as_deref(),
        Some("waiting for a key of `openai`")
    );
    assert!(
        claim(&t, &["default"], 10, LEASE).await.is_empty(),
        "neither the snoozed head nor the next member starts during the snooze"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    t.broker.maintain().await.expect("maintain");
    let again = claim(&t, &["default"], 10, LEASE).await;
    assert_eq!(ids(&again), vec![a.id], "the head runs again first");
    end_held(
        &t,
        again[0].lease,
        Outcome::Failed {
            error: "boom".into(),
            retry_in: Some(Duration::ZERO),
        },
    )
    .await;
    assert_eq!(
        state_of(&t, a.id).await,
        JobState::Retrying,
        "the snoozed attempt did not count: the one retry is still there"
    );
    let history = job_of(&t, a.id).await.history;
    let outcomes: Vec<&str> = history.iter().map(|h| h.outcome.as_str()).collect();
    assert_eq!(outcomes, vec!["snoozed", "retried"]);
    tokio::time::sleep(Duration::from_millis(5)).await;
    t.broker.maintain().await.expect("maintain");
    let third = claim(&t, &["default"], 10, LEASE).await;
    assert_eq!(ids(&third), vec![a.id]);
    end_held(&t, third[0].lease, Outcome::Succeeded(json!(null))).await;
    let next = claim(&t, &["default"], 10, LEASE).await;
    assert_eq!(ids(&next), vec![b.id]);
}
