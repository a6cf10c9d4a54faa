//! Runs one claimed job: finds its handler, decodes its payload, enforces the
//! attempt's timeout, turns panics into failures, and says how it ended.

use crate::task::{Context, Registry, TaskError};
use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use weir_shared::broker::{ClaimedJob, Outcome, SharedBroker};
use weir_shared::config::Settings;

static DEFAULT_TASK: std::sync::LazyLock<weir_shared::config::TaskSettings> =
    std::sync::LazyLock::new(Default::default);

/// How an execution ended, before it becomes a broker [`Outcome`].
pub(crate) enum Ended {
    /// The handler finished (well or badly).
    Finished(Outcome),
    /// The attempt was withdrawn (cancelled, lease lost, handed back at
    /// shutdown): someone else reports for it, or nobody should.
    Withdrawn,
}

/// Runs `job` to its end. `cancel` fires when the attempt is withdrawn.
pub(crate) async fn execute(
    job: &ClaimedJob,
    registry: &Registry,
    settings: &Settings,
    broker: SharedBroker,
    cancel: CancellationToken,
) -> Ended {
    let task = settings.tasks.get(&job.task).unwrap_or(&DEFAULT_TASK);
    let Some(handler) = registry.get(&job.task) else {
        return Ended::Finished(Outcome::Failed {
            error: format!(
                "unknown task `{}`: no handler is registered for it on this worker",
                job.task
            ),
            retry_in: None,
        });
    };
    // A job taken from Celery with `expires` does not start after it.
    if let Some(expires) = job.payload["celery"]["expires"].as_i64()
        && weir_shared::job::now_ms().0 > expires
    {
        let at = chrono::DateTime::from_timestamp_millis(expires).unwrap_or_default();
        return Ended::Finished(Outcome::Failed {
            error: format!(
                "{} {} before it ran",
                weir_shared::celery::EXPIRED,
                at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ),
            retry_in: None,
        });
    }
    let ctx = Context::new(
        job.lease,
        &job.task,
        &job.queue,
        &job.tenant,
        cancel.clone(),
        broker,
    );
    let future = match handler(ctx, job.payload.clone()) {
        Ok(future) => future,
        Err(decode_error) => {
            return Ended::Finished(Outcome::Failed {
                error: decode_error,
                retry_in: None,
            });
        }
    };
    let timeout = job.timeout_ms.map(Duration::from_millis).or(task.timeout);
    // A panic inside the handler is caught here and becomes a failed
    // attempt; it never unwinds through the worker. Dropping the future
    // (timeout, cancellation) stops the handler.
    let handler = AssertUnwindSafe(future).catch_unwind();
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let failure = |error: String| {
        // Backoff counts attempts since the job was last (re)queued by hand,
        // so a replayed dead letter starts again from the first delay.
        let attempt_in_run = (job.max_retries + 1).saturating_sub(job.retries_left);
        let backoff = task.backoff(attempt_in_run + 1, rand::random::<f64>());
        Outcome::Failed {
            error,
            retry_in: Some(backoff),
        }
    };
    tokio::select! {
        ended = handler => Ended::Finished(match ended {
            Ok(Ok(result)) => Outcome::Succeeded(result),
            Ok(Err(TaskError::Retry(error))) => failure(error),
            Ok(Err(TaskError::RetryAfter(error, delay))) => Outcome::Failed { error, retry_in: Some(delay) },
            Ok(Err(TaskError::Fatal(error))) => Outcome::Failed { error, retry_in: None },
            Ok(Err(TaskError::Snooze(reason, delay))) => Outcome::Snoozed { reason, delay },
            Err(panic) => failure(format!("handler panicked: {}", panic_message(panic))),
        }),
        () = deadline => {
            cancel.cancel();
            let secs = timeout.map(|t| t.as_secs_f64()).unwrap_or_default();
            Ended::Finished(failure(format!("timed out after {secs}s")))
        }
        () = cancel.cancelled() => Ended::Withdrawn,
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}
