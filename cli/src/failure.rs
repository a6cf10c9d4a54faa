//! How a command fails: a usage error (exit 2: the command line must
//! change), a refusal (exit 1: the job is not there, or not in a state that
//! allows it) or a runtime failure (exit 1: the same command may work
//! later). Each says which in its message.

use std::fmt::Display;
use std::process::ExitCode;
use weir_shared::broker::BrokerError;

/// A failed command.
#[derive(Debug)]
pub enum Failure {
    /// The command line, configuration or input is wrong.
    Usage(String),
    /// What was asked is not possible now: no such job, the wrong state.
    Refused(String),
    /// Something outside failed.
    Runtime(anyhow::Error),
}

impl Failure {
    /// A usage error with a message that says what to fix.
    pub fn usage(message: impl Display) -> Self {
        Failure::Usage(message.to_string())
    }

    /// Prints the error and gives the exit status.
    pub fn report(self) -> ExitCode {
        match self {
            Failure::Usage(message) => {
                eprintln!("error: {}", message.trim_end());
                ExitCode::from(2)
            }
            Failure::Refused(message) => {
                eprintln!("error: {}", message.trim_end());
                ExitCode::from(1)
            }
            Failure::Runtime(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}

/// The CLI's side of the seam's errors: bad input is a usage error (exit
/// 2); a job that is not there or not in the right state is a refusal, and
/// an outage or a bug a runtime error (both exit 1).
impl From<BrokerError> for Failure {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::Invalid(message) => Failure::Usage(message),
            BrokerError::NotFound => Failure::Refused("no job with that id".into()),
            BrokerError::Conflict(state) => Failure::Refused(format!("the job is {state}")),
            BrokerError::UniqueKeyHeld { .. } => Failure::Refused(e.to_string()),
            BrokerError::WorkflowNotFound => Failure::Refused("no workflow with that id".into()),
            BrokerError::WorkflowConflict(message) => Failure::Refused(message),
            BrokerError::Config(message) => Failure::Usage(format!("WEIR_BROKER_URL: {message}")),
            BrokerError::Unavailable(_) | BrokerError::Internal { .. } => {
                Failure::Runtime(anyhow::Error::new(e))
            }
        }
    }
}

/// Result of a command.
pub type Outcome = Result<(), Failure>;
