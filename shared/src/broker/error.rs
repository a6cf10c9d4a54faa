//! [`BrokerError`]: why a broker call failed, as a type the caller can act
//! on. The API maps each variant to one status code (`api/src/error.rs`),
//! the CLI to one exit status; a backend picks the variant, never the caller.

use crate::job::{JobId, JobState};
use std::error::Error as StdError;
use std::sync::Arc;

/// Why a broker call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The broker cannot be reached, is overloaded or refuses writes for a
    /// while (restarting, out of memory, read-only replica). Nothing was
    /// changed that a retry would repeat; try again later.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// No such job (or not the caller's).
    #[error("job not found")]
    NotFound,
    /// The job is in a state that does not allow this.
    #[error("job is {0}")]
    Conflict(JobState),
    /// No such workflow (or not the caller's).
    #[error("workflow not found")]
    WorkflowNotFound,
    /// The workflow is in a state that does not allow this.
    #[error("{0}")]
    WorkflowConflict(String),
    /// An unfinished job of the same tenant and task already holds the
    /// unique key this call needs.
    #[error("an unfinished job of this task already holds its unique_key")]
    UniqueKeyHeld {
        /// The job holding it, when the backend knows it.
        holder: Option<JobId>,
    },
    /// The request itself cannot be carried out as given (a name the
    /// backend cannot store, a value out of range): fix the input.
    #[error("{0}")]
    Invalid(String),
    /// The broker's configuration is wrong (a URL, a path, an option):
    /// fix the settings, not the request.
    #[error("broker configuration: {0}")]
    Config(String),
    /// Anything else: a bug or corrupt data. The detail is for the log.
    #[error("broker error: {message}")]
    Internal {
        /// What went wrong, for the log.
        message: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<Arc<dyn StdError + Send + Sync>>,
    },
}

impl BrokerError {
    /// An internal error with a message only.
    pub fn internal(message: impl Into<String>) -> Self {
        BrokerError::Internal {
            message: message.into(),
            source: None,
        }
    }

    /// An internal error caused by `source`.
    pub fn internal_from(
        message: impl Into<String>,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        BrokerError::Internal {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }
}

/// Result of a broker call.
pub type BrokerResult<T> = Result<T, BrokerError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_keep_their_source() {
        let io = std::io::Error::other("disk on fire");
        let e = BrokerError::internal_from("writing a job", io);
        assert_eq!(e.to_string(), "broker error: writing a job");
        assert_eq!(
            e.source().map(ToString::to_string).as_deref(),
            Some("disk on fire")
        );
    }
}
