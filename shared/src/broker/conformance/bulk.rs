//! Bulk operator actions on every backend: the dead letters of a queue
//! retried or deleted in bounded steps, narrowed by tenant; `delete` never
//! touches an unfinished job.

use super::{LEASE, TestBroker, claim, enqueue_one, request, state_of};
use crate::broker::{Completion, Outcome, Scope};
use crate::bulk::{BulkAction, BulkRequest, run};
use crate::job::{JobId, JobState};

async fn dead(t: &TestBroker, queue: &str, tenant: &str, n: usize) -> Vec<JobId> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let mut r = request("weir.noop", queue);
        r.tenant = tenant.into();
        r.max_retries = 0;
        ids.push(enqueue_one(t, r).await.id);
    }
    for c in claim(t, &[queue], n, LEASE).await {
        t.broker
            .complete(vec![Completion {
                lease: c.lease,
                outcome: Outcome::Failed {
                    error: "boom".into(),
                    retry_in: None,
                },
            }])
            .await
            .expect("fail");
    }
    ids
}

fn bulk(action: BulkAction, queue: &str) -> BulkRequest {
    BulkRequest {
        action,
        queue: queue.into(),
        state: None,
        task: None,
        tenant: None,
        after: None,
        before: None,
        dry_run: false,
        limit: 1000,
        cursor: None,
    }
}

/// Dry run counts; retry works through the dead letters in steps; delete
/// takes only finished jobs, of the tenant named.
pub async fn bulk_dead_letters(t: TestBroker) {
    let mine = dead(&t, "dataset", "t1", 5).await;
    let theirs = dead(&t, "dataset", "t2", 1).await;
    let elsewhere = dead(&t, "mail", "t1", 2).await;
    let waiting = enqueue_one(&t, request("weir.noop", "dataset")).await.id;

    let dry = run(
        t.broker.as_ref(),
        &BulkRequest {
            dry_run: true,
            ..bulk(BulkAction::Retry, "dataset")
        },
    )
    .await
    .expect("dry run");
    assert_eq!((dry.matched, dry.done, dry.has_more), (6, 0, false));
    assert_eq!(
        state_of(&t, mine[0]).await,
        JobState::Failed,
        "a dry run changes nothing"
    );

    let gone = run(
        t.broker.as_ref(),
        &BulkRequest {
            tenant: Some("t2".into()),
            ..bulk(BulkAction::Delete, "dataset")
        },
    )
    .await
    .expect("delete");
    assert_eq!((gone.matched, gone.done), (1, 1));
    assert!(
        t.broker
            .get(&Scope::All, theirs[0])
            .await
            .expect("get")
            .is_none()
    );

    let mut retried = 0;
    let mut cursor = None;
    let mut steps = 0;
    loop {
        steps += 1;
        let step = run(
            t.broker.as_ref(),
            &BulkRequest {
                limit: 2,
                cursor,
                ..bulk(BulkAction::Retry, "dataset")
            },
        )
        .await
        .expect("retry");
        retried += step.done;
        if !step.has_more {
            break;
        }
        cursor = step.next_cursor;
    }
    assert_eq!(retried, 5);
    assert!(steps >= 3, "limit 2 takes at least 3 steps, took {steps}");
    for id in &mine {
        assert_eq!(state_of(&t, *id).await, JobState::Queued);
    }
    for id in &elsewhere {
        assert_eq!(
            state_of(&t, *id).await,
            JobState::Failed,
            "another queue is untouched"
        );
    }
    assert_eq!(
        t.broker
            .delete(&Scope::All, &[waiting])
            .await
            .expect("delete"),
        0,
        "an unfinished job is never deleted"
    );
    assert_eq!(state_of(&t, waiting).await, JobState::Queued);
    let wrong = run(
        t.broker.as_ref(),
        &BulkRequest {
            state: Some(JobState::Running),
            ..bulk(BulkAction::Retry, "dataset")
        },
    )
    .await;
    assert!(
        wrong.is_err(),
        "retry applies to failed or cancelled jobs only"
    );
}
