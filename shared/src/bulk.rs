//! Operator actions on many jobs at once: retry or delete the dead letters
//! of a queue, cancel what waits in it, narrowed by task, tenant and time.
//! One call handles at most `limit` matching jobs, reading the queue
//! newest first through the bounded listing, and returns a cursor to go on
//! from: a dead-letter queue of a million jobs is worked through in steps
//! that each hold the broker briefly. A dry run counts and changes nothing.
//! The CLI (`weir jobs bulk`) and the API (`POST /v1/jobs/bulk`) both call
//! [`run`].

use crate::broker::{Backend, BrokerError, BrokerResult, ListRequest, Scope};
use crate::job::{Job, JobId, JobState, Millis};
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// The most jobs one call handles.
pub const MAX_BULK: usize = 10_000;

/// Listing pages one call reads at most: a filter that matches little
/// returns with a cursor rather than reading the whole history.
const MAX_PAGES: usize = 20;

/// What to do to each matching job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BulkAction {
    /// Queue failed or cancelled jobs again, with a fresh retry budget.
    Retry,
    /// Cancel jobs that wait (scheduled, queued, retrying).
    Cancel,
    /// Delete finished jobs.
    Delete,
}

impl BulkAction {
    /// The state a filter means when it names none.
    pub fn default_state(self) -> JobState {
        match self {
            BulkAction::Retry | BulkAction::Delete => JobState::Failed,
            BulkAction::Cancel => JobState::Queued,
        }
    }

    /// The states the action applies to.
    pub fn states(self) -> &'static [JobState] {
        match self {
            BulkAction::Retry => &[JobState::Failed, JobState::Cancelled],
            BulkAction::Cancel => &[JobState::Scheduled, JobState::Queued, JobState::Retrying],
            BulkAction::Delete => &[JobState::Succeeded, JobState::Failed, JobState::Cancelled],
        }
    }
}

impl FromStr for BulkAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "retry" => Ok(BulkAction::Retry),
            "cancel" => Ok(BulkAction::Cancel),
            "delete" => Ok(BulkAction::Delete),
            _ => Err(format!("unknown action `{s}`: retry, cancel or delete")),
        }
    }
}

impl fmt::Display for BulkAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BulkAction::Retry => "retry",
            BulkAction::Cancel => "cancel",
            BulkAction::Delete => "delete",
        })
    }
}

/// Which jobs, and what to do.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkRequest {
    /// The action.
    pub action: BulkAction,
    /// The queue (required: bulk actions are per queue).
    pub queue: String,
    /// The state; `None`: the action's default.
    pub state: Option<JobState>,
    /// Only this task.
    pub task: Option<String>,
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only jobs that finished (or, unfinished, were created) at or after this.
    pub after: Option<Millis>,
    /// ... and before this.
    pub before: Option<Millis>,
    /// Count, change nothing.
    pub dry_run: bool,
    /// The most jobs this call handles (1 to [`MAX_BULK`]).
    pub limit: usize,
    /// Where the previous call stopped.
    pub cursor: Option<JobId>,
}

/// What one call did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BulkOutcome {
    /// The action.
    pub action: BulkAction,
    /// True when nothing was changed.
    pub dry_run: bool,
    /// Jobs that matched the filters in this call.
    pub matched: u64,
    /// Jobs changed (retried, cancelled, deleted); 0 in a dry run.
    pub done: u64,
    /// Matching jobs that could not be changed (a retry whose unique key
    /// another job holds, a job that changed state meanwhile).
    pub skipped: u64,
    /// Whether more jobs may match past `next_cursor`.
    pub has_more: bool,
    /// Pass back as `cursor` to go on.
    pub next_cursor: Option<JobId>,
}

impl BulkRequest {
    /// The state to act on, or why the request does not make sense.
    pub fn state(&self) -> Result<JobState, String> {
        let state = self.state.unwrap_or(self.action.default_state());
        if !self.action.states().contains(&state) {
            let allowed: Vec<&str> = self.action.states().iter().map(|s| s.as_str()).collect();
            return Err(format!(
                "`{}` applies to {} jobs, not {state}",
                self.action,
                allowed.join(", ")
            ));
        }
        if !(1..=MAX_BULK).contains(&self.limit) {
            return Err(format!("limit must be 1 to {MAX_BULK}"));
        }
        Ok(state)
    }

    fn in_window(&self, job: &Job) -> bool {
        let at = job.finished_at.unwrap_or(job.created_at);
        self.after.is_none_or(|a| at >= a) && self.before.is_none_or(|b| at < b)
    }
}

/// Runs one step of `request` (see the module).
pub async fn run(broker: &dyn Backend, request: &BulkRequest) -> BrokerResult<BulkOutcome> {
    let state = request.state().map_err(BrokerError::Invalid)?;
    let scope = request.tenant.clone().map_or(Scope::All, Scope::Tenant);
    let mut outcome = BulkOutcome {
        action: request.action,
        dry_run: request.dry_run,
        matched: 0,
        done: 0,
        skipped: 0,
        has_more: false,
        next_cursor: None,
    };
    let mut cursor = request.cursor;
    for _ in 0..MAX_PAGES {
        let room = request.limit - outcome.matched as usize;
        let page = broker
            .list(ListRequest {
                scope: scope.clone(),
                queue: Some(request.queue.clone()),
                state: Some(state),
                task: request.task.clone(),
                limit: room.min(500),
                cursor,
            })
            .await?;
        let matching: Vec<&Job> = page.data.iter().filter(|j| request.in_window(j)).collect();
        outcome.matched += matching.len() as u64;
        if !request.dry_run {
            apply(broker, request.action, &scope, &matching, &mut outcome).await?;
        }
        cursor = page.next_cursor;
        if !page.has_more {
            return Ok(outcome);
        }
        if outcome.matched as usize >= request.limit {
            break;
        }
    }
    outcome.has_more = true;
    outcome.next_cursor = cursor;
    Ok(outcome)
}

async fn apply(
    broker: &dyn Backend,
    action: BulkAction,
    scope: &Scope,
    jobs: &[&Job],
    outcome: &mut BulkOutcome,
) -> BrokerResult<()> {
    if action == BulkAction::Delete {
        let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
        let deleted = broker.delete(scope, &ids).await?;
        outcome.done += deleted;
        outcome.skipped += ids.len() as u64 - deleted;
        return Ok(());
    }
    for job in jobs {
        let done = match action {
            BulkAction::Retry => broker.retry(scope, job.id).await.map(drop),
            _ => broker.cancel(scope, job.id).await.map(drop),
        };
        match done {
            Ok(()) => outcome.done += 1,
            Err(
                BrokerError::Conflict(_)
                | BrokerError::NotFound
                | BrokerError::UniqueKeyHeld { .. },
            ) => outcome.skipped += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
