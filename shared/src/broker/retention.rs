//! How long finished jobs are kept, per outcome, on every broker: the
//! succeeded ones (`WEIR_RETENTION_SUCCEEDED`, 24 h) go sooner than the
//! dead letters (`WEIR_RETENTION_FAILED`, 7 days, for failed and cancelled
//! jobs), and `WEIR_RETENTION_KEEP` caps how many finished jobs of one
//! outcome a queue keeps, the oldest going first. Each broker enforces it
//! in its maintenance pass, in bounded batches (Redis also expires a
//! finished job's hash by itself).

use crate::broker::config::{Env, VarDoc};
use crate::config::{Problem, parse_duration};
use crate::job::JobState;
use std::fmt;
use std::time::Duration;

/// The variables every broker reads for retention.
pub const VARS: &[VarDoc] = &[
    (
        "WEIR_RETENTION_SUCCEEDED",
        "`24h` (or `WEIR_RETENTION`)",
        "how long succeeded jobs stay readable",
    ),
    (
        "WEIR_RETENTION_FAILED",
        "`7d`",
        "how long failed and cancelled jobs (the dead letters) stay readable",
    ),
    (
        "WEIR_RETENTION_KEEP",
        "none",
        "at most this many finished jobs per queue and outcome; the oldest go first",
    ),
];

/// Finished jobs deleted per outcome and queue in one maintenance pass.
pub const RETENTION_BATCH: usize = 1000;

/// How long finished jobs are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Succeeded jobs.
    pub succeeded: Duration,
    /// Failed and cancelled jobs.
    pub failed: Duration,
    /// The most finished jobs of one outcome one queue keeps.
    pub keep: Option<u64>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            succeeded: Duration::from_secs(24 * 3600),
            failed: Duration::from_secs(7 * 24 * 3600),
            keep: None,
        }
    }
}

impl Retention {
    /// How long a job that ended in `state` is kept (`None` for a state
    /// that is not an end).
    pub fn of(&self, state: JobState) -> Option<Duration> {
        match state {
            JobState::Succeeded => Some(self.succeeded),
            JobState::Failed | JobState::Cancelled => Some(self.failed),
            _ => None,
        }
    }

    /// The shorter of the two ages.
    pub fn shortest(&self) -> Duration {
        self.succeeded.min(self.failed)
    }

    /// Reads the variables above; what is wrong goes to `problems`.
    pub fn from_env(env: Env<'_>, problems: &mut Vec<Problem>) -> Self {
        let defaults = Retention::default();
        let mut age = |names: &[&str], default: Duration| {
            let Some((name, value)) = names.iter().find_map(|n| env(n).map(|v| (*n, v))) else {
                return default;
            };
            match parse_duration(&value) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    problems.push(Problem {
                        key: name.into(),
                        message: "must be longer than zero".into(),
                    });
                    default
                }
                Err(message) => {
                    problems.push(Problem {
                        key: name.into(),
                        message,
                    });
                    default
                }
            }
        };
        let succeeded = age(
            &["WEIR_RETENTION_SUCCEEDED", "WEIR_RETENTION"],
            defaults.succeeded,
        );
        let failed = age(&["WEIR_RETENTION_FAILED"], defaults.failed);
        let keep = match env("WEIR_RETENTION_KEEP") {
            None => None,
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    problems.push(Problem {
                        key: "WEIR_RETENTION_KEEP".into(),
                        message: format!("`{v}` is not a whole number of jobs above 0"),
                    });
                    None
                }
            },
        };
        Retention {
            succeeded,
            failed,
            keep,
        }
    }
}

impl Retention {
    /// As JSON documents show it (`weir queues --json`, `GET /v1/queues`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "succeeded_seconds": self.succeeded.as_secs(),
            "failed_seconds": self.failed.as_secs(),
            "cancelled_seconds": self.failed.as_secs(),
            "keep_per_queue": self.keep,
        })
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "succeeded {}, failed and cancelled {}",
            humantime::format_duration(self.succeeded),
            humantime::format_duration(self.failed)
        )?;
        if let Some(n) = self.keep {
            write!(f, ", at most {n} per queue and outcome")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(vars: &[(&str, &str)]) -> (Retention, Vec<Problem>) {
        let mut problems = Vec::new();
        let env = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        };
        (Retention::from_env(&env, &mut problems), problems)
    }

    #[test]
    fn defaults_keep_dead_letters_longer() {
        let (r, problems) = read(&[]);
        assert!(problems.is_empty());
        assert_eq!(r.of(JobState::Succeeded), Some(Duration::from_secs(86_400)));
        assert_eq!(r.of(JobState::Failed), Some(Duration::from_secs(604_800)));
        assert_eq!(r.of(JobState::Cancelled), r.of(JobState::Failed));
        assert_eq!(r.of(JobState::Queued), None);
    }

    #[test]
    fn the_older_variable_sets_the_succeeded_age_only() {
        let (r, _) = read(&[("WEIR_RETENTION", "1h")]);
        assert_eq!(r.succeeded, Duration::from_secs(3600));
        assert_eq!(r.failed, Retention::default().failed);
        let (r, _) = read(&[("WEIR_RETENTION", "1h"), ("WEIR_RETENTION_SUCCEEDED", "2h")]);
        assert_eq!(r.succeeded, Duration::from_secs(7200));
    }

    #[test]
    fn bad_values_are_named() {
        let (_, problems) = read(&[
            ("WEIR_RETENTION_FAILED", "forever"),
            ("WEIR_RETENTION_KEEP", "0"),
            ("WEIR_RETENTION_SUCCEEDED", "0s"),
        ]);
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "WEIR_RETENTION_SUCCEEDED",
                "WEIR_RETENTION_FAILED",
                "WEIR_RETENTION_KEEP"
            ]
        );
    }
}
