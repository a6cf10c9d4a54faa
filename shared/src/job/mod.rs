//! The job model: what a job is, the states it moves through, and the limits
//! on what a client may submit. Depends on nothing else in the crate.

mod id;
mod state;
mod time;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use id::JobId;
pub use state::JobState;
pub use time::{Millis, duration_ms, duration_us, now_ms, now_us};

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
/// The longest `unique_key` (and `serial_key`) accepted.
pub const MAX_UNIQUE_KEY_LEN: usize = 255;
/// The longest stored error message; longer ones are truncated.
pub const MAX_ERROR_LEN: usize = 4096;

/// A job as every API and `--json` command shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Job {
    /// UUIDv7 id.
    #[schema(value_type = String, example = "01a21d78-3b5e-7c1a-9d2f-4e6a8b0c2d4e")]
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
    /// Jobs of the tenant with the same serial key run one at a time, in
    /// enqueue order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_key: Option<String>,
    /// For a workflow step: its workflow, step id and parents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<crate::workflow::JobWorkflow>,
    /// When the job was enqueued.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Millis,
    /// When the job is (or was) due to run.
    #[schema(value_type = String, format = DateTime)]
    pub run_at: Millis,
    /// When the current or last attempt started.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<Millis>,
    /// When the job reached a terminal state.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<Millis>,
    /// While running: the worker that holds the lease (`host:pid:id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The attempts that ended, oldest first (the last [`MAX_HISTORY`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Attempt>,
}

/// Attempts a job's history keeps; older ones are dropped.
pub const MAX_HISTORY: usize = 10;

/// One attempt that ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    /// Its number (the lease's attempt).
    pub attempt: u32,
    /// The worker that ran it.
    pub worker: String,
    /// When it started.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<Millis>,
    /// When it ended.
    #[schema(value_type = String, format = DateTime)]
    pub finished_at: Millis,
    /// `succeeded`, `failed` (no retry left, or not retryable), `retried`
    /// (failed, and the job runs again), `released` (handed back at
    /// shutdown), `snoozed` (waited for something outside the job, such as
    /// a provider key; not counted), `lease_expired` (the worker was lost)
    /// or `cancelled`.
    pub outcome: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An attempt as the brokers store it (compact, times in milliseconds):
/// `{"a": attempt, "w": worker, "s": started, "f": finished, "o": outcome, "e": error}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredAttempt {
    a: u32,
    #[serde(default)]
    w: String,
    #[serde(default)]
    s: Option<i64>,
    f: i64,
    o: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    e: Option<String>,
}

impl From<StoredAttempt> for Attempt {
    fn from(s: StoredAttempt) -> Self {
        Attempt {
            attempt: s.a,
            worker: s.w,
            started_at: s.s.filter(|t| *t > 0).map(Millis),
            finished_at: Millis(s.f),
            outcome: s.o,
            error: s.e.filter(|e| !e.is_empty()),
        }
    }
}

/// Reads a stored history (a JSON array of [`StoredAttempt`]); empty or
/// absent is no history.
pub fn parse_history(text: Option<&str>) -> Result<Vec<Attempt>, serde_json::Error> {
    match text.filter(|t| !t.is_empty()) {
        None => Ok(Vec::new()),
        Some(t) => Ok(serde_json::from_str::<Vec<StoredAttempt>>(t)?
            .into_iter()
            .map(Attempt::from)
            .collect()),
    }
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
