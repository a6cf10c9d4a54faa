//! The TOML file named by `WEIR_CONFIG`. Unknown keys are errors: a typo
//! in a setting must not silently fall back to a default.

use super::Problem;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfigFile {
    #[serde(default)]
    pub queues: QueuesFile,
    #[serde(default)]
    pub tasks: BTreeMap<String, TaskFile>,
    #[serde(default)]
    pub schedules: Vec<ScheduleFile>,
    #[serde(default)]
    pub warmup: BTreeMap<String, WarmupFile>,
    #[serde(default)]
    pub http: HttpFile,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderFile>,
    pub mail: Option<MailFile>,
    #[serde(default)]
    pub datasets: DatasetsFile,
}

/// `[datasets]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DatasetsFile {
    pub embedding: Option<String>,
    pub vector_store: Option<String>,
    pub cache_ttl: Option<String>,
    pub search_cache_mb: Option<usize>,
    pub names: Option<Vec<String>>,
}

/// `[providers.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ProviderFile {
    pub base_url: String,
    pub keys_env: Option<String>,
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub cooldown: Option<String>,
    pub timeout: Option<String>,
    pub embedding_model: Option<String>,
    pub max_batch: Option<usize>,
    pub batch_linger: Option<String>,
    pub max_wait: Option<String>,
}

/// `[mail]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MailFile {
    pub url: String,
    pub from: String,
    pub starttls: Option<String>,
    pub timeout: Option<String>,
}

/// `[http]`: outbound calls of tasks.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HttpFile {
    pub allow_hosts: Option<Vec<String>>,
    pub timeout: Option<String>,
    pub max_response_bytes: Option<usize>,
}

/// `[[schedules]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ScheduleFile {
    pub name: String,
    pub cron: String,
    pub tz: Option<String>,
    pub task: String,
    pub queue: Option<String>,
    pub payload: Option<toml::Value>,
    pub priority: Option<i64>,
    pub misfire: Option<String>,
    pub grace: Option<String>,
}

/// `[warmup.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WarmupFile {
    pub database_url: String,
    pub redis_url: Option<String>,
    pub query: String,
    pub key: String,
    pub ttl: String,
    pub jitter: Option<f64>,
    pub batch: Option<usize>,
}

/// `[queues]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct QueuesFile {
    pub declared: Option<Vec<String>>,
}

/// `[tasks."NAME"]` as written in the file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskFile {
    /// Default queue.
    pub queue: Option<String>,
    /// Retries after the first attempt.
    pub max_retries: Option<u32>,
    /// Delay before the first retry, e.g. `"60s"`.
    pub retry_delay: Option<String>,
    /// Exponential backoff between retries.
    pub retry_backoff: Option<bool>,
    /// Per-attempt timeout, e.g. `"10m"`.
    pub timeout: Option<String>,
    /// Starts per period across every worker, e.g. `"10/m"` (or `"10/m:5"` with a burst).
    pub rate_limit: Option<String>,
    /// Jobs that may start back to back under `rate_limit` (default 1).
    pub rate_burst: Option<u32>,
    /// Jobs running at once across every worker and process.
    pub concurrency_limit: Option<u32>,
    /// Jobs running at once per tenant.
    pub tenant_concurrency_limit: Option<u32>,
    /// Runs the task by POSTing its payload to this URL.
    pub url: Option<String>,
    /// `python`: runs the task in the Python runner (a Celery task body).
    pub runner: Option<String>,
}

pub(super) fn read(path: &Path, problems: &mut Vec<Problem>) -> ConfigFile {
    let key = format!("WEIR_CONFIG ({})", path.display());
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            problems.push(Problem {
                key,
                message: format!("cannot read the file: {e}"),
            });
            return ConfigFile::default();
        }
    };
    match toml::from_str(&text) {
        Ok(file) => file,
        Err(e) => {
            problems.push(Problem {
                key: path.display().to_string(),
                message: e.message().to_owned()
                    + &e.span()
                        .map(|s| format!(" (at line {})", line_of(&text, s.start)))
                        .unwrap_or_default(),
            });
            ConfigFile::default()
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}
