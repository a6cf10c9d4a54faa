//! The settings of each part: a task, a warm-up target, a worker node,
//! the HTTP API and the logs.

use super::{DEFAULT_RETRY_DELAY, MAX_RETRY_DELAY};
use crate::queue_order::QueueOrder;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

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
    /// Where its body runs when no handler of its name is registered.
    pub body: TaskBody,
}

/// Where a task's body runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TaskBody {
    /// A handler registered under its name (built in, or the user's).
    #[default]
    Handler,
    /// An HTTP endpoint: the payload is POSTed as JSON; the answer's body
    /// is the result (`url = "..."`).
    Http(String),
    /// The Python runner: the Celery task of that name in the app
    /// `WEIR_PYTHON_APP` names (`runner = "python"`).
    Python,
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
            body: TaskBody::Handler,
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
    /// `WEIR_METRICS_ADDR`: where `weir worker` and `weir scheduler` serve
    /// `/healthz`, `/readyz` and `/metrics`; `None`: they serve nothing.
    pub metrics_addr: Option<SocketAddr>,
    /// How long a client may take to send a request's headers, and how
    /// long a kept-alive connection may sit idle between requests.
    pub header_timeout: Duration,
    /// How long a request may take, body read included (408 beyond);
    /// an event stream's life after its first byte is not counted.
    pub request_timeout: Duration,
    /// Connections open at once; `None`: three quarters of the open-file
    /// limit, at most [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: Option<usize>,
    /// Event streams open at once in this process.
    pub max_streams: usize,
    /// Event streams open at once per API key (or per client address
    /// when authentication is off).
    pub max_streams_per_key: usize,
    /// Failed authentications allowed per client address.
    pub auth_failure_limit: crate::limit::Rate,
}

/// The connection cap when `WEIR_HTTP_MAX_CONNECTIONS` is unset and the
/// open-file limit allows more.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

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
