//! Settings for every role, from three layers: defaults, the TOML file named
//! by `WEIR_CONFIG`, then environment variables (flags are applied on top by
//! the CLI). [`Settings::load`] reports every problem at once, each with the
//! key it came from, before anything starts.
//!
//! # Options
//!
//! Every environment variable, its Celery alias, flag and default are in
//! one table, [`vars::VARS`]; `docs/configuration.md` is generated from it.

pub mod auth;
mod env;
mod file;
mod sections;
pub mod vars;

use crate::queue_order::QueueOrder;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use env::parse_duration;
pub use file::TaskFile;

/// Queues declared when configuration names none.
pub const DEFAULT_QUEUES: [&str; 10] = [
    "priority_pipeline",
    "pipeline",
    "dataset",
    "mail",
    "ops_trace",
    "app_deletion",
    "plugin",
    "workflow_storage",
    "conversation",
    "default",
];

/// Tasks every worker knows.
pub const BUILTIN_TASKS: [&str; 6] = [
    "weir.noop",
    "weir.echo",
    "weir.sleep",
    "weir.cpu",
    "weir.fail",
    "cache.warmup",
];

pub use crate::broker::config::DEFAULT_BROKER_URL;
/// Largest request body accepted when none is configured (1 MiB).
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1 << 20;
/// Hard ceiling for `WEIR_MAX_PAYLOAD_BYTES` (16 MiB).
pub const MAX_PAYLOAD_BYTES_LIMIT: usize = 16 << 20;
/// Delay before the first retry when a task names none.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Longest backoff between two attempts.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);

/// Everything a role needs to start.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Where jobs live: the backend and its own options.
    pub broker: crate::broker::BrokerConfig,
    /// Queues jobs may be enqueued to.
    pub declared_queues: Vec<String>,
    /// Per-task settings from `[tasks."NAME"]`.
    pub tasks: BTreeMap<String, TaskSettings>,
    /// Worker node settings.
    pub worker: WorkerSettings,
    /// HTTP API settings.
    pub http: HttpSettings,
    /// Logging.
    pub log: LogSettings,
    /// The file settings were read from, if any.
    pub file: Option<PathBuf>,
    /// API keys and rate limits.
    pub auth: auth::AuthSettings,
    /// Global caps and rate limits per task (file, then environment).
    pub limits: crate::limit::Limits,
    /// `[[schedules]]`, in file order.
    pub schedules: Vec<crate::schedule::Schedule>,
    /// `[warmup.NAME]`: what `cache.warmup {"target": NAME}` does.
    pub warmup: BTreeMap<String, WarmupTarget>,
}

/// A cache warm-up target: a query whose rows become Redis keys.
#[derive(Debug, Clone, PartialEq)]
pub struct WarmupTarget {
    /// `postgres://...` or `sqlite://...`.
    pub database_url: String,
    /// Where the keys go; `None` for the broker's Redis.
    pub redis_url: Option<String>,
    /// The query; each row becomes one key holding the row as JSON.
    pub query: String,
    /// Key template: `{column}` is replaced by that column's value.
    pub key: String,
    /// Time to live of each key.
    pub ttl: Duration,
    /// Up to this fraction of `ttl` is added at random per key (default
    /// 0.1), so a whole cache does not expire at the same moment.
    pub jitter: f64,
    /// Keys written per pipelined round trip.
    pub batch: usize,
}

/// How one task runs.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSettings {
    /// Queue its jobs go to when a request names none.
    pub queue: Option<String>,
    /// Retries after the first attempt when a request names none.
    pub max_retries: Option<u32>,
    /// Delay before the first retry.
    pub retry_delay: Duration,
    /// Double the delay at each further retry (with a little jitter).
    pub retry_backoff: bool,
    /// Per-attempt timeout when a request names none.
    pub timeout: Option<Duration>,
    /// Caps and rate limit as the file sets them (see [`Settings::limits`]
    /// for the values in force).
    pub limit: crate::limit::TaskLimit,
}

impl Default for TaskSettings {
    fn default() -> Self {
        TaskSettings {
            queue: None,
            max_retries: None,
            retry_delay: DEFAULT_RETRY_DELAY,
            retry_backoff: true,
            timeout: None,
            limit: crate::limit::TaskLimit::default(),
        }
    }
}

impl TaskSettings {
    /// The wait before attempt `next_attempt` (2 for the first retry):
    /// `retry_delay`, doubled per further retry when `retry_backoff`, capped
    /// at an hour, plus up to 10% jitter so a burst of failures does not
    /// come back as a burst.
    pub fn backoff(&self, next_attempt: u32, jitter: f64) -> Duration {
        let base = if self.retry_backoff {
            let doublings = next_attempt.saturating_sub(2).min(30);
            self.retry_delay.saturating_mul(1u32 << doublings)
        } else {
            self.retry_delay
        };
        let capped = base.min(MAX_RETRY_DELAY);
        capped + capped.mul_f64(jitter.clamp(0.0, 1.0) * 0.1)
    }
}

/// Worker node settings.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSettings {
    /// Queues to serve; `None` means every declared queue in declared order.
    pub queues: Option<QueueOrder>,
    /// Job slots of the node.
    pub concurrency: u32,
    /// Child processes the slots are spread over.
    pub processes: u32,
    /// How long SIGTERM waits for running jobs before handing them back.
    pub shutdown_timeout: Duration,
    /// Lease length; renewed every third of it while a job runs.
    pub lease: Duration,
    /// Slots move between `min_workers` and `max_workers` with the backlog.
    pub autoscale: bool,
    /// Autoscale ceiling.
    pub max_workers: u32,
    /// Autoscale floor.
    pub min_workers: u32,
    /// A child is replaced after this many tasks (0: never).
    pub max_tasks_per_child: u64,
    /// A child is replaced once its resident memory passes this many bytes.
    pub max_memory_per_child: Option<u64>,
    /// Where each worker setting came from (`concurrency` -> `WEIR_CONCURRENCY`,
    /// `default (CPU cores)`...), for the start-up log and `weir workers`.
    pub sources: BTreeMap<String, String>,
}

/// Parses a size such as `512MiB`, `2GiB`, `100MB` or `1048576`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 512MiB, 2GiB or 100MB"))?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "kib" | "k" => 1024.0,
        "mib" | "m" => 1024.0 * 1024.0,
        "gib" | "g" => 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}` (use B, KB, MB, GB, KiB, MiB or GiB)"
            ));
        }
    };
    let bytes = number * factor;
    if bytes < 1.0 || !bytes.is_finite() {
        return Err(format!("`{text}` must be at least one byte"));
    }
    Ok(bytes as u64)
}

/// HTTP API settings.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// Listen address.
    pub addr: SocketAddr,
    /// Largest request body.
    pub max_payload_bytes: usize,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSettings {
    /// A tracing filter, e.g. `info` or `weir_worker=debug`.
    pub filter: String,
    /// Output format.
    pub format: LogFormat,
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: an environment variable or a `file: key` path.
    pub key: String,
    /// What is wrong and what would be right.
    pub message: String,
}

/// Every problem found while loading settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in the order found.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for p in &self.problems {
            writeln!(f, "  {}: {}", p.key, p.message)?;
        }
        Ok(())
    }
}

/// The number of CPU cores this process may use: honours cgroup CPU quotas
/// and the affinity mask; 1 when the platform cannot tell.
pub fn cpu_cores() -> u32 {
    cores_from(std::thread::available_parallelism())
}

/// The core count from what the platform said: 1 when it could not tell.
fn cores_from(answer: std::io::Result<std::num::NonZeroUsize>) -> u32 {
    answer
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

impl Settings {
    /// Loads settings from the process environment (and the file it names).
    pub fn from_env() -> Result<Settings, ConfigError> {
        Settings::load(&|key| std::env::var(key).ok())
    }

    /// Loads settings from an environment given as a lookup function.
    pub fn load(env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let mut problems = Vec::new();
        let file_path = env("WEIR_CONFIG")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        let file = match &file_path {
            Some(path) => file::read(path, &mut problems),
            None => file::ConfigFile::default(),
        };
        let settings = env::apply(file, file_path.clone(), env, &mut problems);
        // Keys that come from the file are named with the file.
        if let Some(path) = &file_path {
            for p in &mut problems {
                if ["tasks.", "queues.", "schedules[", "warmup."]
                    .iter()
                    .any(|prefix| p.key.starts_with(prefix))
                {
                    p.key = format!("{} {}", path.display(), p.key);
                }
            }
        }
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// The settings of a task, or the defaults for one not configured.
    pub fn task(&self, name: &str) -> TaskSettings {
        self.tasks.get(name).cloned().unwrap_or_default()
    }

    /// True when `name` is a task that workers can run: built in or configured.
    pub fn knows_task(&self, name: &str) -> bool {
        BUILTIN_TASKS.contains(&name) || self.tasks.contains_key(name)
    }

    /// The queues a worker serves.
    pub fn worker_queues(&self) -> QueueOrder {
        self.worker
            .queues
            .clone()
            .unwrap_or_else(|| QueueOrder::strict(self.declared_queues.iter().cloned()))
    }
}

#[cfg(test)]
mod tests;
