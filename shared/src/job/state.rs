//! The states a job moves through.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a job is in its life. The terminal states are `succeeded`, `failed`
/// (the queue's dead letters, retryable by hand) and `cancelled`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// A workflow step whose parents have not all ended.
    Waiting,
    /// `run_at` is in the future.
    Scheduled,
    /// Ready to be claimed.
    Queued,
    /// Claimed by a worker that holds its lease.
    Running,
    /// An attempt failed; the next one waits for `run_at`.
    Retrying,
    /// Finished with a result.
    Succeeded,
    /// Retries exhausted or a non-retryable error: a dead letter.
    Failed,
    /// Cancelled by a client.
    Cancelled,
}

impl JobState {
    /// Every state, in lifecycle order (the column order of `weir queues`).
    pub const ALL: [JobState; 8] = [
        JobState::Waiting,
        JobState::Scheduled,
        JobState::Queued,
        JobState::Running,
        JobState::Retrying,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    /// The name used in JSON, SQL and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Scheduled => "scheduled",
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// True for `succeeded`, `failed` and `cancelled`: nothing more will happen
    /// to the job unless a person retries it.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown state `{s}`; expected one of waiting, scheduled, queued, running, retrying, succeeded, failed, cancelled"
                )
            })
    }
}
