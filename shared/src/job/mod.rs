//! The job model: what a job is, the states it moves through, and the limits
//! on what a client may submit. Depends on nothing else in the crate.

pub mod input;
mod time;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::str::FromStr;

pub use time::{Millis, duration_ms, duration_us, now_ms, now_us};

/// A job's id: a UUIDv7, so ids sort by creation time and cursors can use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub uuid::Uuid);

impl JobId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        JobId(uuid::Uuid::now_v7())
    }

    /// The id of the run a schedule fires at `fire_time`: the same on every
    /// scheduler replica (a UUIDv7 whose time is the fire time and whose
    /// other bits are a digest of the schedule and the time), so a tick
    /// enqueued twice is recognised as one job.
    pub fn for_tick(schedule: &str, fire_time: Millis) -> Self {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new()
            .chain_update(schedule.as_bytes())
            .chain_update(b"@")
            .chain_update(fire_time.0.to_be_bytes())
            .finalize();
        let mut random = [0u8; 10];
        random.copy_from_slice(&digest[..10]);
        let ms = u64::try_from(fire_time.0).unwrap_or(0);
        JobId(uuid::Builder::from_unix_timestamp_millis(ms, &random).into_uuid())
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for JobId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(JobId)
    }
}

/// Where a job is in its life. The terminal states are `succeeded`, `failed`
/// (the queue's dead letters, retryable by hand) and `cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
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
    pub const ALL: [JobState; 7] = [
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
                    "unknown state `{s}`; expected one of scheduled, queued, running, retrying, succeeded, failed, cancelled"
                )
            })
    }
}

/// Highest priority a job may have.
pub const MAX_PRIORITY: u8 = 9;
/// Priority of a job that names none.
pub const DEFAULT_PRIORITY: u8 = 5;
/// Retries after the first attempt when neither the job nor its task says.
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// The most retries a job may ask for.
pub const MAX_RETRIES_LIMIT: u32 = 25;
/// The farthest in the future a job may be scheduled (30 days).
pub const MAX_DELAY_MS: i64 = 30 * 24 * 3600 * 1000;
/// The longest `unique_key` accepted.
pub const MAX_UNIQUE_KEY_LEN: usize = 255;
/// The longest stored error message; longer ones are truncated.
pub const MAX_ERROR_LEN: usize = 4096;

/// A job as every API and `--json` command shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// UUIDv7 id.
    pub id: JobId,
    /// Task name, e.g. `weir.echo`.
    pub task: String,
    /// Queue the job waits in.
    pub queue: String,
    /// Tenant that owns the job (from the API key).
    pub tenant: String,
    /// Current state.
    pub state: JobState,
    /// 0-9, higher first within a queue.
    pub priority: u8,
    /// The handler's input.
    pub payload: Value,
    /// Attempts started so far (counted when a worker claims the job).
    pub attempts: u32,
    /// Retries allowed after the first attempt.
    pub max_retries: u32,
    /// The handler's result; null until succeeded.
    pub result: Value,
    /// The last error message, if any.
    pub error: Option<String>,
    /// The last progress value the handler reported.
    pub progress: Value,
    /// Per-attempt timeout in milliseconds, if the job set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Deduplication key among the tenant's unfinished jobs of this task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_key: Option<String>,
    /// When the job was enqueued.
    pub created_at: Millis,
    /// When the job is (or was) due to run.
    pub run_at: Millis,
    /// When the current or last attempt started.
    pub started_at: Option<Millis>,
    /// When the job reached a terminal state.
    pub finished_at: Option<Millis>,
}

/// Truncates an error message to [`MAX_ERROR_LEN`] bytes on a char boundary.
pub fn truncate_error(message: &str) -> String {
    if message.len() <= MAX_ERROR_LEN {
        return message.to_owned();
    }
    let mut end = MAX_ERROR_LEN;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

/// Checks a queue name: `^[a-z0-9][a-z0-9_.-]{0,63}$`. The narrow alphabet
/// keeps names safe inside Redis keys, AMQP routing keys and file names.
pub fn validate_queue_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && name.len() <= 64 {
        Ok(())
    } else {
        Err(format!(
            "invalid queue name `{name}`: use 1-64 characters of a-z, 0-9, `_`, `.`, `-`, starting with a letter or digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>(), Ok(state));
        }
        assert!("done".parse::<JobState>().is_err());
    }

    #[test]
    fn ids_are_time_ordered() {
        let a = JobId::new();
        let b = JobId::new();
        assert!(a < b);
        assert_eq!(a.to_string().parse::<JobId>().ok(), Some(a));
    }

    #[test]
    fn queue_names_are_checked() {
        assert!(validate_queue_name("priority_pipeline").is_ok());
        assert!(validate_queue_name("a.b-c").is_ok());
        assert!(validate_queue_name("").is_err());
        assert!(validate_queue_name("Upper").is_err());
        assert!(validate_queue_name("{tag}").is_err());
        assert!(validate_queue_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn long_errors_are_truncated_on_a_char_boundary() {
        let long = "é".repeat(MAX_ERROR_LEN);
        let cut = truncate_error(&long);
        assert!(cut.len() <= MAX_ERROR_LEN + "…".len());
        assert!(cut.ends_with('…'));
    }
}
