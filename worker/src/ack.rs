//! Acknowledging completions: one broker call per batch, and what happens
//! when the call fails.
//!
//! - The broker is unavailable: the batch is retried with a growing pause
//!   (at most 2 s). The leases are still this worker's until they expire,
//!   and dropping a completion would run the job again.
//! - Any other error (the broker refused the batch): the batch is split
//!   and each completion tried alone, so one bad completion does not hold
//!   up the rest. A completion refused alone is recorded instead as a
//!   failure that says why (a result the broker cannot store ends the job
//!   `failed`, with the reason, rather than running it forever); if even
//!   that is refused, it is given up, logged as an error and counted in
//!   `weir_acks_abandoned_total`: the lease expires and the job runs again.

use std::future::Future;
use std::time::Duration;
use weir_shared::broker::{BrokerError, BrokerResult, Completion, Lease, Outcome};

/// The longest pause between two tries while the broker is unavailable.
const MOST_PAUSE: Duration = Duration::from_secs(2);

/// Records `batch` through `complete` (the broker's `complete`), as the
/// module says.
pub(crate) async fn acknowledge<F, Fut>(complete: &F, batch: Vec<Completion>)
where
    F: Fn(Vec<Completion>) -> Fut,
    Fut: Future<Output = BrokerResult<Vec<Lease>>>,
{
    let refused = match until_answered(complete, batch.clone()).await {
        Ok(()) => return,
        Err(e) => e,
    };
    if batch.len() > 1 {
        tracing::warn!(error = %refused, jobs = batch.len(), "The broker refused a batch of acknowledgements; acknowledging one by one");
        for completion in batch {
            acknowledge_one(complete, completion).await;
        }
        return;
    }
    for completion in batch {
        acknowledge_alone(complete, completion, refused.to_string()).await;
    }
}

async fn acknowledge_one<F, Fut>(complete: &F, completion: Completion)
where
    F: Fn(Vec<Completion>) -> Fut,
    Fut: Future<Output = BrokerResult<Vec<Lease>>>,
{
    if let Err(e) = until_answered(complete, vec![completion.clone()]).await {
        acknowledge_alone(complete, completion, e.to_string()).await;
    }
}

/// One completion the broker refused with `reason`: recorded as a failure
/// that says so, or given up.
async fn acknowledge_alone<F, Fut>(complete: &F, completion: Completion, reason: String)
where
    F: Fn(Vec<Completion>) -> Fut,
    Fut: Future<Output = BrokerResult<Vec<Lease>>>,
{
    let lease = completion.lease;
    let instead = match completion.outcome {
        Outcome::Succeeded(_) | Outcome::Failed { .. } => Completion {
            lease,
            outcome: Outcome::Failed {
                error: format!(
                    "the outcome could not be recorded: {}",
                    weir_shared::input::shown(&reason)
                ),
                retry_in: None,
            },
        },
        Outcome::Released | Outcome::Snoozed { .. } => {
            give_up(lease, &reason);
            return;
        }
    };
    tracing::warn!(job_id = %lease.id, attempt = lease.attempt, error = %reason, "The broker refused this job's outcome; recording it as failed with the reason");
    if let Err(e) = until_answered(complete, vec![instead]).await {
        give_up(lease, &e.to_string());
    }
}

fn give_up(lease: Lease, reason: &str) {
    metrics::counter!("weir_acks_abandoned_total").increment(1);
    tracing::error!(job_id = %lease.id, attempt = lease.attempt, error = %reason, "Acknowledgement abandoned; the job runs again when its lease expires");
}

/// Counts and logs completions the broker ignored because their lease was
/// no longer held.
pub(crate) fn report_stale(stale: Vec<Lease>) {
    for lease in stale {
        metrics::counter!("weir_stale_acks_total").increment(1);
        tracing::info!(job_id = %lease.id, attempt = lease.attempt, "Completion ignored: the lease was no longer held");
    }
}

/// Calls `complete` until the broker answers: `Ok` once recorded (stale
/// completions logged), the error if the broker refused.
async fn until_answered<F, Fut>(complete: &F, batch: Vec<Completion>) -> Result<(), BrokerError>
where
    F: Fn(Vec<Completion>) -> Fut,
    Fut: Future<Output = BrokerResult<Vec<Lease>>>,
{
    let mut attempt = 0u32;
    loop {
        match complete(batch.clone()).await {
            Ok(stale) => {
                report_stale(stale);
                return Ok(());
            }
            Err(BrokerError::Unavailable(detail)) => {
                attempt += 1;
                tracing::warn!(error = %detail, jobs = batch.len(), attempt, "Acknowledging failed; retrying");
                let pause = Duration::from_millis(100 * u64::from(attempt)).min(MOST_PAUSE);
                tokio::time::sleep(pause).await;
            }
            Err(refused) => return Err(refused),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use weir_shared::broker::sqlite::{Durability, SqliteBroker};
    use weir_shared::broker::{Broker, ClaimRequest, EnqueueRequest, Inspect, Scope};
    use weir_shared::job::{JobId, JobState};

    async fn running(broker: &SqliteBroker, n: usize) -> Vec<Lease> {
        let requests = (0..n)
            .map(|_| EnqueueRequest {
                id: None,
                tenant: "default".into(),
                task: "t".into(),
                queue: "default".into(),
                payload: json!({}),
                priority: 5,
                run_at: None,
                max_retries: 0,
                timeout_ms: None,
                unique_key: None,
                serial_key: None,
            })
            .collect();
        broker.enqueue(requests).await.expect("enqueue");
        let claimed = broker
            .claim(ClaimRequest {
                worker: "w".into(),
                queues: vec!["default".into()],
                limit: n,
                lease: Duration::from_secs(30),
                limits: Arc::default(),
                tasks: None,
            })
            .await
            .expect("claim");
        assert_eq!(claimed.len(), n);
        claimed.into_iter().map(|c| c.lease).collect()
    }

    async fn state(broker: &SqliteBroker, id: JobId) -> (JobState, Option<String>) {
        let job = broker
            .get(&Scope::All, id)
            .await
            .expect("get")
            .expect("job");
        (job.state, job.error)
    }

    /// A batch with one completion the broker refuses: the others are
    /// recorded, and the refused one ends `failed` with the reason.
    #[tokio::test]
    async fn one_refused_completion_neither_blocks_the_batch_nor_vanishes() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("weir.db");
        let broker = Arc::new(
            SqliteBroker::open(path.to_str().expect("utf-8"), Durability::Normal)
                .await
                .expect("broker"),
        );
        let leases = running(&broker, 3).await;
        let poisoned = leases[1].id;
        let outage_left = AtomicU32::new(2);
        let complete = |batch: Vec<Completion>| {
            let broker = broker.clone();
            let outage = outage_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            async move {
                if outage {
                    return Err(BrokerError::Unavailable("connection refused".into()));
                }
                let refuses = batch
                    .iter()
                    .any(|c| c.lease.id == poisoned && matches!(c.outcome, Outcome::Succeeded(_)));
                if refuses {
                    return Err(BrokerError::Invalid("result too large to store".into()));
                }
                broker.complete(batch).await
            }
        };
        let batch = leases
            .iter()
            .map(|&lease| Completion {
                lease,
                outcome: Outcome::Succeeded(json!({"ok": true})),
            })
            .collect();
        tokio::time::timeout(Duration::from_secs(10), acknowledge(&complete, batch))
            .await
            .expect("the flusher does not hang");
        assert_eq!(state(&broker, leases[0].id).await.0, JobState::Succeeded);
        assert_eq!(state(&broker, leases[2].id).await.0, JobState::Succeeded);
        let (poisoned_state, error) = state(&broker, poisoned).await;
        assert_eq!(poisoned_state, JobState::Failed);
        assert!(
            error.is_some_and(|e| e.contains("result too large to store")),
            "the reason is kept"
        );
    }

    /// A completion refused every way is given up, not retried forever:
    /// the call returns and the job is still running (its lease brings it back).
    #[tokio::test]
    async fn a_completion_refused_every_way_is_given_up() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("weir.db");
        let broker = SqliteBroker::open(path.to_str().expect("utf-8"), Durability::Normal)
            .await
            .expect("broker");
        let leases = running(&broker, 1).await;
        let calls = AtomicU32::new(0);
        let complete = |_batch: Vec<Completion>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(BrokerError::internal("script error")) }
        };
        let batch = vec![Completion {
            lease: leases[0],
            outcome: Outcome::Succeeded(json!(1)),
        }];
        tokio::time::timeout(Duration::from_secs(5), acknowledge(&complete, batch))
            .await
            .expect("gives up");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "the outcome, then the failure instead"
        );
        assert_eq!(state(&broker, leases[0].id).await.0, JobState::Running);
    }
}
