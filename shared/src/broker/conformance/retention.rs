//! Retention on every backend: finished jobs are kept per outcome (dead
//! letters longer than successes) and at most `keep` per queue and outcome.

use super::{LEASE, TestBroker, claim, request};
use crate::broker::{Completion, ListRequest, Outcome, Retention, Scope, SharedBroker};
use crate::job::{JobId, JobState};
use serde_json::json;
use std::time::Duration;

/// Enqueues `n` jobs on `queue`, claims them and ends them all with `outcome`.
async fn finish(t: &TestBroker, queue: &str, n: usize, outcome: Outcome) -> Vec<JobId> {
    let requests = (0..n)
        .map(|_| {
            let mut r = request("weir.noop", queue);
            r.max_retries = 0;
            r
        })
        .collect();
    t.broker.enqueue(requests).await.expect("enqueue");
    let claimed = claim(t, &[queue], n, LEASE).await;
    assert_eq!(claimed.len(), n);
    let mut ids = Vec::new();
    for c in claimed {
        ids.push(c.lease.id);
        t.broker
            .complete(vec![Completion {
                lease: c.lease,
                outcome: outcome.clone(),
            }])
            .await
            .expect("complete");
        // Distinct finish times, so "oldest" is well defined.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    ids
}

fn dead_letter() -> Outcome {
    Outcome::Failed {
        error: "boom".into(),
        retry_in: None,
    }
}

async fn exists(b: &SharedBroker, id: JobId) -> bool {
    b.get(&Scope::All, id).await.expect("get").is_some()
}

/// Succeeded jobs go after their (short) age; failed and cancelled jobs,
/// the dead letters, stay for theirs.
pub async fn retention_per_outcome(t: TestBroker) {
    let b = (t.reopen)(Retention {
        succeeded: Duration::from_millis(300),
        failed: Duration::from_secs(3600),
        keep: None,
    })
    .await;
    let t = TestBroker {
        broker: b.clone(),
        ..t
    };
    let ok = finish(&t, "default", 2, Outcome::Succeeded(json!(1))).await;
    let dead = finish(&t, "default", 1, dead_letter()).await;
    let cancelled = super::enqueue_one(&t, request("weir.noop", "default"))
        .await
        .id;
    b.cancel(&Scope::All, cancelled).await.expect("cancel");
    assert!(exists(&b, ok[0]).await, "kept within its age");
    tokio::time::sleep(Duration::from_millis(700)).await;
    b.maintain().await.expect("maintain");
    for id in &ok {
        assert!(
            !exists(&b, *id).await,
            "a succeeded job past its age is gone"
        );
    }
    assert!(exists(&b, dead[0]).await, "the dead letter is kept");
    assert!(exists(&b, cancelled).await, "the cancelled job is kept");
    let counts = b.queue_counts().await.expect("counts");
    let q = counts.iter().find(|q| q.name == "default").expect("listed");
    assert_eq!(q.counts.get(&JobState::Succeeded), None, "{q:?}");
    assert_eq!(q.counts.get(&JobState::Failed), Some(&1), "{q:?}");
}

/// At most `keep` finished jobs per queue and outcome: the oldest go first,
/// other outcomes and queues are counted apart.
pub async fn retention_keeps_at_most_n(t: TestBroker) {
    let b = (t.reopen)(Retention {
        succeeded: Duration::from_secs(3600),
        failed: Duration::from_secs(3600),
        keep: Some(3),
    })
    .await;
    let t = TestBroker {
        broker: b.clone(),
        ..t
    };
    let ok = finish(&t, "default", 5, Outcome::Succeeded(json!(1))).await;
    let dead = finish(&t, "default", 2, dead_letter()).await;
    let other = finish(&t, "mail", 4, Outcome::Succeeded(json!(1))).await;
    b.maintain().await.expect("maintain");
    for (i, id) in ok.iter().enumerate() {
        assert_eq!(exists(&b, *id).await, i >= 2, "succeeded job {i} of 5");
    }
    for id in &dead {
        assert!(exists(&b, *id).await, "2 failed jobs are under the cap");
    }
    let mut kept = 0;
    for id in &other {
        kept += usize::from(exists(&b, *id).await);
    }
    assert_eq!(kept, 3, "another queue keeps its own 3");
    let page = b
        .list(ListRequest {
            scope: Scope::All,
            queue: Some("default".into()),
            state: Some(JobState::Succeeded),
            task: None,
            limit: 50,
            cursor: None,
        })
        .await
        .expect("list");
    assert_eq!(page.data.len(), 3, "listing shows what is kept");
}
