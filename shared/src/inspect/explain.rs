//! "Why is this job not running?": the reasons, from what the broker knows
//! now (queue flags, live workers, permits, rates, the queue ahead), for
//! `weir jobs explain` and `GET /v1/jobs/{id}/explain`.

use super::consumers;
use crate::broker::{Backend, BrokerResult, Scope};
use crate::job::{Job, JobState, Millis, now_ms};
use crate::limit::{Holder, Limits, TaskLimit};
use serde::Serialize;

/// One reason, with a stable `code` for programs and a `message` for people.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reason {
    /// `scheduled`, `retrying`, `running`, `finished`, `queue_paused`,
    /// `no_consumer`, `no_handler`, `cap_full`, `tenant_share`, `rate_limited`,
    /// `serial_busy`, `jobs_ahead` or `waiting_for_slot`.
    pub code: &'static str,
    /// What it means here, in a sentence.
    pub message: String,
    /// When the reason stops holding (scheduled, retrying, rate limited).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Running jobs that hold the permits (cap full, tenant share): all of
    /// them for the operator, a tenant's own for a tenant.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<Holder>,
    /// Holders of other tenants, counted but not shown to a tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_holders: Option<u64>,
}

impl Reason {
    fn new(code: &'static str, message: String) -> Self {
        Reason {
            code,
            message,
            until: None,
            holders: Vec::new(),
            other_holders: None,
        }
    }
}

/// The answer for one job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// The job's state now.
    pub state: JobState,
    /// Why it is (not) running; the first is the main one.
    pub reasons: Vec<Reason>,
}

/// `at`, and how long until it in words people read: "in 850 ms",
/// "in 42s", "in 4m 12s", "in 2h 5m", "in 3d 4h".
fn in_words(at: Millis, now: Millis) -> String {
    let ms = at.0.saturating_sub(now.0).max(0);
    if ms < 1000 {
        return format!("{} (in {ms} ms)", at.to_rfc3339());
    }
    let s = (ms + 999) / 1000;
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    let words = if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    };
    format!("{} (in {words})", at.to_rfc3339())
}

fn holders_text(holders: &[Holder]) -> String {
    let shown: Vec<String> = holders
        .iter()
        .take(5)
        .map(|h| format!("{} on {}", h.id, h.worker))
        .collect();
    let more = holders.len().saturating_sub(shown.len());
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// Explains `job` under the `limits` in force, as `viewer` may see it: a
/// tenant is shown its own jobs holding permits and only a count of other
/// tenants' (never their ids, tenants or workers).
pub async fn explain(
    broker: &dyn Backend,
    job: &Job,
    limits: &Limits,
    viewer: &Scope,
) -> BrokerResult<Explanation> {
    let now = now_ms();
    let mut reasons = Vec::new();
    match job.state {
        JobState::Running => reasons.push(Reason::new(
            "running",
            format!(
                "running: attempt {} started at {}",
                job.attempts,
                job.started_at
                    .map_or_else(|| "-".into(), Millis::to_rfc3339)
            ),
        )),
        JobState::Succeeded | JobState::Failed | JobState::Cancelled => {
            let why = match (&job.state, &job.error) {
                (JobState::Failed, Some(e)) => format!(": {e}"),
                _ => String::new(),
            };
            reasons.push(Reason::new(
                "finished",
                format!(
                    "finished as {} at {}{why}",
                    job.state,
                    job.finished_at
                        .map_or_else(|| "-".into(), Millis::to_rfc3339)
                ),
            ));
        }
        JobState::Waiting => {
            let message = match &job.workflow {
                Some(wf) => {
                    let open: Vec<String> = match broker.get_workflow(viewer, wf.id).await {
                        Ok(workflow) => wf
                            .needs
                            .iter()
                            .filter(|n| workflow.step(n).is_some_and(|s| !s.state.is_terminal()))
                            .map(|n| format!("`{n}`"))
                            .collect(),
                        Err(_) => wf.needs.iter().map(|n| format!("`{n}`")).collect(),
                    };
                    format!(
                        "step `{}` of workflow {} waits for its parent steps to end: {}",
                        wf.step,
                        wf.id,
                        open.join(", ")
                    )
                }
                None => "waiting for its parent steps to end".to_owned(),
            };
            reasons.push(Reason::new("waiting", message));
        }
        JobState::Scheduled => reasons.push(Reason {
            until: Some(job.run_at.to_rfc3339()),
            ..Reason::new(
                "scheduled",
                format!("scheduled to run at {}", in_words(job.run_at, now)),
            )
        }),
        JobState::Retrying => reasons.push(Reason {
            until: Some(job.run_at.to_rfc3339()),
            ..Reason::new(
                "retrying",
                format!(
                    "attempt {} failed ({}); the next attempt is due at {}",
                    job.attempts,
                    job.error.as_deref().unwrap_or("no error recorded"),
                    in_words(job.run_at, now)
                ),
            )
        }),
        JobState::Queued => {}
    }
    if !matches!(
        job.state,
        JobState::Queued | JobState::Scheduled | JobState::Retrying
    ) {
        return Ok(Explanation {
            state: job.state,
            reasons,
        });
    }

    // Whatever the state, a waiting job also needs an open queue and a consumer.
    let queues = broker.queue_counts().await?;
    if queues.iter().any(|q| q.name == job.queue && q.paused) {
        reasons.push(Reason::new(
            "queue_paused",
            format!(
                "queue `{}` is paused; `weir queues resume {}` lets workers take its jobs",
                job.queue, job.queue
            ),
        ));
    }
    let workers = broker.workers().await?;
    if consumers(&workers, &job.queue) == 0 {
        reasons.push(Reason::new(
            "no_consumer",
            format!(
                "no live worker serves queue `{}`; start one with `weir worker -Q {}`",
                job.queue, job.queue
            ),
        ));
    } else if !super::handled_somewhere(&workers, &job.queue, &job.task) {
        reasons.push(Reason::new(
            "no_handler",
            format!(
                "no worker serving queue `{}` has a handler for task `{}`; the job waits (spending no attempt) for a worker built with it",
                job.queue, job.task
            ),
        ));
    }
    if job.state != JobState::Queued {
        return Ok(Explanation {
            state: job.state,
            reasons,
        });
    }

    if let Some(limit) = limits.get(&job.task) {
        limit_reasons(broker, job, limit, viewer, now, &mut reasons).await?;
    }
    let position = broker.position(job).await?;
    if position.serial_ahead > 0 {
        reasons.push(Reason::new(
            "serial_busy",
            format!(
                "serial key `{}` is busy: {} {} of the same key ahead of it; they run one at a time, in enqueue order",
                job.serial_key.as_deref().unwrap_or(""),
                position.serial_ahead,
                if position.serial_ahead == 1 { "job" } else { "jobs" }
            ),
        ));
    }
    if position.ahead > 0 && position.serial_ahead == 0 {
        let higher = if position.ahead_higher_priority > 0 {
            format!(
                " ({} of them at a higher priority)",
                position.ahead_higher_priority
            )
        } else {
            String::new()
        };
        let place = if position.held {
            format!(
                "among the jobs of `{}` waiting for a permit or the rate",
                job.task
            )
        } else {
            format!("in queue `{}`", job.queue)
        };
        reasons.push(Reason::new(
            "jobs_ahead",
            format!(
                "{} {} ahead of it {place}{higher}",
                position.ahead,
                if position.ahead == 1 {
                    "job is"
                } else {
                    "jobs are"
                }
            ),
        ));
    }
    if reasons.is_empty() {
        let (busy, slots) = workers
            .iter()
            .filter(|w| w.queues.iter().any(|q| q == &job.queue))
            .fold((0, 0), |(b, s), w| (b + w.slots.busy, s + w.slots.current));
        reasons.push(Reason::new(
            "waiting_for_slot",
            format!(
                "nothing holds it back: it starts when a worker of `{}` has a free slot ({busy} of {slots} slots busy)",
                job.queue
            ),
        ));
    }
    Ok(Explanation {
        state: job.state,
        reasons,
    })
}

/// The holders `viewer` may see, and how many it may only count.
fn visible(holders: &[Holder], viewer: &Scope) -> (Vec<Holder>, u64) {
    match viewer.tenant() {
        None => (holders.to_vec(), 0),
        Some(t) => {
            let mine: Vec<Holder> = holders.iter().filter(|h| h.tenant == t).cloned().collect();
            let others = (holders.len() - mine.len()) as u64;
            (mine, others)
        }
    }
}

async fn limit_reasons(
    broker: &dyn Backend,
    job: &Job,
    limit: &TaskLimit,
    viewer: &Scope,
    now: Millis,
    reasons: &mut Vec<Reason>,
) -> BrokerResult<()> {
    let usage = broker.usage(&job.task, limit).await?;
    if let Some(cap) = limit.concurrency
        && usage.holders.len() >= cap as usize
    {
        let (holders, others) = visible(&usage.holders, viewer);
        let message = if cap == 0 {
            format!(
                "task `{}` has a concurrency cap of 0: it is held until the cap is raised",
                job.task
            )
        } else {
            let mut held_by = holders_text(&holders);
            if others > 0 {
                if !held_by.is_empty() {
                    held_by.push_str(" and ");
                }
                held_by.push_str(&format!("{others} job(s) of other tenants"));
            }
            format!(
                "task `{}` is at its concurrency cap of {cap}: held by {held_by}",
                job.task
            )
        };
        reasons.push(Reason {
            holders,
            other_holders: viewer.tenant().map(|_| others),
            ..Reason::new("cap_full", message)
        });
    }
    if let Some(cap) = limit.tenant_concurrency {
        let mine: Vec<Holder> = usage
            .holders
            .iter()
            .filter(|h| h.tenant == job.tenant)
            .cloned()
            .collect();
        if mine.len() >= cap as usize {
            reasons.push(Reason {
                message: format!(
                    "tenant `{}` already runs {} job(s) of `{}`, its share (tenant cap {cap}){}",
                    job.tenant,
                    mine.len(),
                    job.task,
                    if mine.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", holders_text(&mine))
                    }
                ),
                holders: mine,
                ..Reason::new("tenant_share", String::new())
            });
        }
    }
    if let (Some(rate), Some(until)) = (limit.rate, usage.throttled_until) {
        let until = Millis(until);
        reasons.push(Reason {
            until: Some(until.to_rfc3339()),
            ..Reason::new(
                "rate_limited",
                format!(
                    "task `{}` is rate limited to {}; the next start is allowed at {}",
                    job.task,
                    rate,
                    in_words(until, now)
                ),
            )
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_said_in_words() {
        let now = Millis(1_000_000);
        let say = |ms: i64| in_words(Millis(now.0 + ms), now);
        assert!(say(850).ends_with("(in 850 ms)"));
        assert!(say(42_000).ends_with("(in 42s)"));
        assert!(say(252_000).ends_with("(in 4m 12s)"));
        assert!(say(7_500_000).ends_with("(in 2h 5m)"));
        assert!(say(273_600_000).ends_with("(in 3d 4h)"));
    }
}
