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
mod datasets;
mod env;
mod file;
mod outbound;
mod roles;
mod sections;
pub mod vars;

use crate::queue_order::QueueOrder;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use datasets::{DatasetSettings, Embedding, valid_dataset_name};
pub use env::parse_duration;
pub use file::TaskFile;
pub use outbound::{MailSettings, ProviderSettings, StartTls};
pub use roles::{
    DEFAULT_MAX_CONNECTIONS, HttpSettings, LogFormat, LogSettings, TaskBody, TaskSettings,
    WarmupTarget, WorkerSettings, parse_bytes,
};

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
pub const BUILTIN_TASKS: [&str; 10] = [
    "weir.noop",
    "weir.echo",
    "weir.sleep",
    "weir.cpu",
    "weir.fail",
    "cache.warmup",
    "http.request",
    "mail.send",
    "document.index",
    "celery.rejected",
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
    /// `[http]`: outbound calls of tasks (`http.request`).
    pub outbound: OutboundSettings,
    /// `[providers.NAME]`: pooled API keys for provider calls.
    pub providers: BTreeMap<String, ProviderSettings>,
    /// `[mail]`: the SMTP server of `mail.send`.
    pub mail: Option<MailSettings>,
    /// `[datasets]`: how `document.index` embeds and where it writes.
    pub datasets: DatasetSettings,
}

/// Outbound HTTP of tasks: `[http]` in the file, `WEIR_HTTP_ALLOW_HOSTS`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundSettings {
    /// Hosts a job may call although they are private or local (exact
    /// hosts as written in URLs, or `*.suffix`).
    pub allow_hosts: Vec<String>,
    /// One call, connect to last byte (`[http] timeout`, default 30 s).
    pub timeout: Duration,
    /// The largest response read (`[http] max_response_bytes`, default 10 MiB).
    pub max_response_bytes: usize,
}

impl Default for OutboundSettings {
    fn default() -> Self {
        OutboundSettings {
            allow_hosts: Vec::new(),
            timeout: Duration::from_secs(30),
            max_response_bytes: 10 << 20,
        }
    }
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
                if [
                    "tasks.",
                    "queues.",
                    "schedules[",
                    "warmup.",
                    "http.",
                    "datasets.",
                ]
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

    /// Counts a new job in `weir_jobs_enqueued_total{queue,task}`; a task
    /// the configuration does not know is counted as `other`, so clients
    /// cannot grow the label set.
    pub fn count_enqueued(&self, job: &crate::job::Job) {
        self.count_enqueued_as(&job.queue, &job.task);
    }

    /// [`Settings::count_enqueued`] for a job known by its queue and task
    /// (a workflow's steps).
    pub fn count_enqueued_as(&self, queue: &str, task: &str) {
        let task = if self.knows_task(task) {
            task.to_owned()
        } else {
            "other".to_owned()
        };
        metrics::counter!("weir_jobs_enqueued_total", "queue" => queue.to_owned(), "task" => task)
            .increment(1);
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
