//! The job lifecycle on every backend: enqueue, claim, leases and fencing,
//! priorities, delays, unique keys, cancel, dead letters and release.

use super::{LEASE, TestBroker, claim, enqueue_one, job_of, request, state_of};
use crate::broker::{BrokerError, Completion, EnqueueRequest, Outcome, Scope};
use crate::job::{JobState, Millis, now_ms};
use serde_json::{Value, json};
use std::time::Duration;

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

/// Acknowledging with the next claim: the completions are recorded (a
/// stale one reported, not applied), the claim leases the next job, a job
/// the acknowledgement releases (the next member of a serial lane) can be
/// leased by that same call, with nothing left to claim the
/// acknowledgement is still recorded, and a delayed job is claimed once
/// its time comes.
pub async fn complete_and_claim_acknowledges_then_claims(t: TestBroker) {
    let mut first = request("weir.noop", "default");
    first.serial_key = Some("lane".into());
    let mut second = request("weir.noop", "default");
    second.serial_key = Some("lane".into());
    let first = enqueue_one(&t, first).await;
    let second = enqueue_one(&t, second).await;
    let lost = enqueue_one(&t, request("weir.noop", "other")).await;
    let old = claim(&t, &["other"], 1, Duration::from_millis(50))
        .await
        .remove(0);
    tokio::time::sleep(Duration::from_millis(150)).await;
    t.broker.maintain().await.expect("maintain");
    let held = claim(&t, &["default"], 5, LEASE).await;
    assert_eq!(held.len(), 1, "one member of the lane at a time");
    assert_eq!(held[0].lease.id, first.id);
    let claim_request = |limit| crate::broker::ClaimRequest {
        worker: "w1".into(),
        queues: vec!["default".into()],
        limit,
        lease: LEASE,
        limits: std::sync::Arc::default(),
        tasks: None,
    };
    let (stale, claimed) = t
        .broker
        .complete_and_claim(
            &[
                Completion {
                    lease: held[0].lease,
                    outcome: Outcome::Succeeded(json!("done")),
                },
                Completion {
                    lease: old.lease,
                    outcome: Outcome::Succeeded(json!("stale")),
                },
            ],
            &claim_request(5),
        )
        .await
        .expect("complete and claim");
    assert_eq!(stale, vec![old.lease], "the lost lease is reported stale");
    assert_eq!(job_of(&t, first.id).await.result, json!("done"));
    assert_eq!(state_of(&t, first.id).await, JobState::Succeeded);
    assert_eq!(state_of(&t, lost.id).await, JobState::Queued);
    assert_eq!(
        claimed.len(),
        1,
        "the lane's next member, released by the ack"
    );
    assert_eq!(claimed[0].lease.id, second.id);
    assert_eq!(claimed[0].lease.attempt, 1);

    let (stale, claimed) = t
        .broker
        .complete_and_claim(
            &[Completion {
                lease: claimed[0].lease,
                outcome: Outcome::Failed {
                    error: "boom".into(),
                    retry_in: None,
                },
            }],
            &claim_request(5),
        )
        .await
        .expect("complete and claim");
    assert!(stale.is_empty());
    assert!(claimed.is_empty(), "nothing left in the queue");
    let failed = job_of(&t, second.id).await;
    assert_eq!(
        failed.state,
        JobState::Failed,
        "recorded though nothing was claimed"
    );
    assert_eq!(failed.error.as_deref(), Some("boom"));

    // A busy worker acknowledging with every claim still gets a job whose
    // delay ended, without any other claim or maintenance pass.
    let mut later = request("weir.noop", "default");
    later.run_at = Some(Millis(now_ms().0 + 200));
    let later = enqueue_one(&t, later).await;
    enqueue_one(&t, request("weir.noop", "default")).await;
    let busy = claim(&t, &["default"], 5, LEASE).await;
    assert_eq!(busy.len(), 1, "the delayed job is not due yet");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, claimed) = t
        .broker
        .complete_and_claim(
            &[Completion {
                lease: busy[0].lease,
                outcome: Outcome::Succeeded(json!(null)),
            }],
            &claim_request(5),
        )
        .await
        .expect("complete and claim");
    assert_eq!(claimed.len(), 1, "the job whose time came");
    assert_eq!(claimed[0].lease.id, later.id);
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

/// A job enqueued with its own id keeps it; the same id again (a repeat
/// after a crash) stores nothing and answers the job that has it, before
/// and after that job ran; another tenant cannot take the id.
pub async fn explicit_ids_enqueue_once(t: TestBroker) {
    let id: crate::job::JobId = "5b93ed13-79b4-478e-8f19-7420cc843d4e"
        .parse()
        .expect("a UUID");
    let with_id = |payload: Value| {
        let mut r = request("weir.noop", "default");
        r.id = Some(id);
        r.payload = payload;
        r
    };
    let first = t
        .broker
        .enqueue(vec![
            with_id(json!({"n": 1})),
            request("weir.noop", "default"),
        ])
        .await
        .expect("enqueue");
    assert!(first[0].created && first[1].created);
    assert_eq!(first[0].job.id, id);
    let again = t
        .broker
        .enqueue(vec![
            with_id(json!({"n": 2})),
            request("weir.echo", "default"),
        ])
        .await
        .expect("enqueue again");
    assert!(!again[0].created, "the same id is not stored twice");
    assert_eq!(again[0].job.id, id);
    assert_eq!(again[0].job.payload, json!({"n": 1}), "the first stands");
    assert!(again[1].created, "the rest of the batch is stored");

    let c = claim(&t, &["default"], 10, LEASE).await;
    let mine = c.iter().find(|c| c.lease.id == id).expect("claimed");
    t.broker
        .complete(vec![Completion {
            lease: mine.lease,
            outcome: Outcome::Succeeded(Value::Null),
        }])
        .await
        .expect("complete");
    let after = t
        .broker
        .enqueue(vec![with_id(json!({"n": 3}))])
        .await
        .expect("enqueue after it ran");
    assert!(!after[0].created, "a finished job's id is not reused");
    assert_eq!(after[0].job.state, JobState::Succeeded);
    assert_eq!(state_of(&t, id).await, JobState::Succeeded);

    let mut theirs = with_id(json!({}));
    theirs.tenant = "t2".into();
    assert!(matches!(
        t.broker.enqueue(vec![theirs]).await,
        Err(crate::broker::BrokerError::Invalid(_))
    ));
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

/// A claimer takes only the tasks it has handlers for: a job of another
/// task stays queued, spends no attempt, is counted as queued, and goes to
/// the first claimer that has its handler (or takes any task).
pub async fn claims_only_handled_tasks(t: TestBroker) {
    let claim_for = |tasks: Option<Vec<&str>>| {
        let broker = t.broker.clone();
        let tasks = tasks.map(|ts| std::sync::Arc::new(ts.iter().map(|s| s.to_string()).collect()));
        async move {
            broker
                .claim(super::ClaimRequest {
                    worker: "w-new".into(),
                    queues: vec!["default".into()],
                    limit: 10,
                    lease: LEASE,
                    limits: std::sync::Arc::default(),
                    tasks,
                })
                .await
                .expect("claim")
        }
    };
    let a = enqueue_one(&t, request("weir.noop", "default")).await.id;
    let b = enqueue_one(&t, request("deploy.later", "default")).await.id;
    let c = enqueue_one(&t, request("weir.noop", "default")).await.id;
    let got: Vec<_> = claim_for(Some(vec!["weir.noop"]))
        .await
        .iter()
        .map(|j| j.lease.id)
        .collect();
    assert_eq!(got, vec![a, c], "only the handled task");
    assert!(claim_for(Some(vec!["weir.noop"])).await.is_empty());
    let waiting = job_of(&t, b).await;
    assert_eq!(waiting.state, JobState::Queued);
    assert_eq!(waiting.attempts, 0, "no attempt spent");
    let counts = t.broker.queue_counts().await.expect("counts");
    let q = counts.iter().find(|q| q.name == "default").expect("listed");
    assert_eq!(q.counts.get(&JobState::Queued), Some(&1), "{q:?}");

    let got = claim_for(Some(vec!["deploy.later", "weir.noop"])).await;
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].lease.id, got[0].lease.attempt), (b, 1));

    let d = enqueue_one(&t, request("other.task", "default")).await.id;
    assert!(claim_for(Some(vec!["weir.noop"])).await.is_empty());
    let got = claim_for(None).await;
    assert_eq!(
        got.iter().map(|j| j.lease.id).collect::<Vec<_>>(),
        vec![d],
        "a claimer of any task takes it"
    );
}

/// Ends an attempt with `outcome`.
async fn end(t: &TestBroker, lease: super::super::Lease, outcome: Outcome) {
    t.broker
        .complete(vec![Completion { lease, outcome }])
        .await
        .expect("complete");
}

/// Every ended attempt is kept in the job's history (worker, times,
/// outcome, error), a running job names its worker, and a success clears
/// the error an earlier attempt left.
pub async fn attempt_history_is_kept(t: TestBroker) {
    let mut r = request("weir.noop", "default");
    r.max_retries = 3;
    let id = enqueue_one(&t, r).await.id;
    let first = claim(&t, &["default"], 1, LEASE).await.remove(0);
    let running = job_of(&t, id).await;
    assert_eq!(running.worker.as_deref(), Some("w1"), "the holder is named");
    end(
        &t,
        first.lease,
        Outcome::Failed {
            error: "flaky upstream".into(),
            retry_in: Some(Duration::ZERO),
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = claim(&t, &["default"], 1, LEASE).await.remove(0);
    end(&t, second.lease, Outcome::Released).await;
    let third = claim(&t, &["default"], 1, Duration::from_millis(50))
        .await
        .remove(0);
    tokio::time::sleep(Duration::from_millis(120)).await;
    t.broker.maintain().await.expect("maintain");
    let fourth = claim(&t, &["default"], 1, LEASE).await.remove(0);
    end(&t, fourth.lease, Outcome::Succeeded(json!("done"))).await;
    let job = job_of(&t, id).await;
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.error, None, "a success clears the earlier error");
    assert_eq!(job.worker, None);
    let seen: Vec<(u32, &str, &str)> = job
        .history
        .iter()
        .map(|a| (a.attempt, a.outcome.as_str(), a.worker.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (first.lease.attempt, "retried", "w1"),
            (second.lease.attempt, "released", "w1"),
            (third.lease.attempt, "lease_expired", "w1"),
            (fourth.lease.attempt, "succeeded", "w1"),
        ]
    );
    assert_eq!(job.history[0].error.as_deref(), Some("flaky upstream"));
    assert!(
        job.history[2]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("lease expired"))
    );
    assert!(
        job.history
            .iter()
            .all(|a| a.started_at.is_some_and(|s| s <= a.finished_at))
    );

    // A running job cancelled: its attempt ends `cancelled`.
    let other = enqueue_one(&t, request("weir.noop", "default")).await.id;
    claim(&t, &["default"], 1, LEASE).await;
    t.broker.cancel(&Scope::All, other).await.expect("cancel");
    let cancelled = job_of(&t, other).await;
    assert_eq!(
        cancelled
            .history
            .iter()
            .map(|a| a.outcome.as_str())
            .collect::<Vec<_>>(),
        vec!["cancelled"]
    );
}

/// The history keeps the last ten attempts.
pub async fn attempt_history_is_bounded(t: TestBroker) {
    let mut r = request("weir.noop", "default");
    r.max_retries = 20;
    let id = enqueue_one(&t, r).await.id;
    for _ in 0..12 {
        let c = claim(&t, &["default"], 1, LEASE).await.remove(0);
        end(&t, c.lease, Outcome::Released).await;
    }
    let job = job_of(&t, id).await;
    assert_eq!(job.history.len(), crate::job::MAX_HISTORY);
    assert_eq!(job.history[0].attempt, 3, "the oldest two are dropped");
    assert_eq!(job.history[9].attempt, 12);
}
