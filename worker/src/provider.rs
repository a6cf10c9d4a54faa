//! The provider form of `http.request` and the embeddings of
//! `document.index` call providers through `weir_shared::provider`; this
//! turns how a call ended into a job's outcome. When no key may take the
//! call, the job waits: in the handler for up to [`INLINE_WAIT`], else
//! snoozed (its slot freed, its attempt not spent) until the first key is
//! free, for at most the provider's `max_wait` after it was enqueued.

use crate::task::{Context, TaskError};
use std::time::Duration;
use weir_shared::job::now_ms;
use weir_shared::outbound::Response;
use weir_shared::provider::{Call, Provider, SendError};

pub(crate) use weir_shared::provider::{Providers, providers};

/// The longest a call waits for a key inside its handler; a longer wait
/// snoozes the job instead of holding its slot.
pub const INLINE_WAIT: Duration = Duration::from_secs(5);

/// Sends `call` for the job of `ctx`; a cancelled job stops waiting.
pub(crate) async fn send(
    ctx: &Context,
    provider: &Provider,
    call: Call<'_>,
) -> Result<Response, TaskError> {
    let sent = tokio::select! {
        sent = provider.send(ctx.broker(), call, INLINE_WAIT) => sent,
        () = ctx.cancelled() => return Err(TaskError::retry("interrupted")),
    };
    sent.map_err(|e| outcome(ctx, provider, e))
}

/// The job outcome of a failed call.
pub(crate) fn outcome(ctx: &Context, provider: &Provider, error: SendError) -> TaskError {
    match error {
        SendError::Fatal(m) => TaskError::fatal(m),
        SendError::Retry(m) => TaskError::retry(m),
        SendError::Wait { after, why } => snooze(ctx, provider, after, &why),
    }
}

/// Snoozes the job until a key is free, or, past `max_wait` since it was
/// enqueued, fails the attempt.
fn snooze(ctx: &Context, provider: &Provider, after: Duration, why: &str) -> TaskError {
    let waited = ctx
        .job_id()
        .created_at()
        .map(|at| Duration::from_millis(u64::try_from(now_ms().0 - at.0).unwrap_or(0)))
        .unwrap_or_default();
    let free_at = chrono::Utc::now() + after;
    let message = format!(
        "waiting for a key of `{}`: {why}; the first is free at {}",
        provider.name(),
        free_at.format("%H:%M:%S")
    );
    let max_wait = provider.settings().max_wait;
    if waited + after > max_wait {
        return TaskError::retry(format!(
            "{message}, past max_wait ({}s after the job was enqueued)",
            max_wait.as_secs()
        ));
    }
    TaskError::Snooze(message, after)
}
