//! The Redis backend's options: the URL, `WEIR_REDIS_PREFIX` and the
//! retention every broker reads (`broker/retention.rs`).

use super::RedisBroker;
use crate::broker::Retention;
use crate::broker::config::Env;
use crate::broker::{BrokerResult, Connected};
use crate::config::Problem;
use crate::limit::BrokerRateLimiter;
use std::sync::Arc;

/// The variables this backend reads: name, default, when to change it.
pub const VARS: &[crate::broker::config::VarDoc] = &[(
    "WEIR_REDIS_PREFIX",
    "`weir`",
    "several deployments on one Redis",
)];

/// Options of the Redis broker.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    /// `redis://[:PASSWORD@]HOST:PORT/DB` or `rediss://...`.
    pub url: String,
    /// `WEIR_REDIS_PREFIX` (default `weir`): every key starts with it, so
    /// several deployments can share one Redis.
    pub prefix: String,
    /// How long finished jobs stay readable.
    pub retention: Retention,
}

impl RedisConfig {
    /// Reads the URL, `WEIR_REDIS_PREFIX` and the retention.
    pub fn parse(url: &str, env: Env<'_>, problems: &mut Vec<Problem>) -> Self {
        let prefix = env("WEIR_REDIS_PREFIX").unwrap_or_else(|| "weir".into());
        if prefix.is_empty()
            || prefix.len() > 64
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            problems.push(Problem {
                key: "WEIR_REDIS_PREFIX".into(),
                message: format!("`{prefix}` must be 1-64 letters, digits, `_`, `.` or `-`"),
            });
        }
        let retention = Retention::from_env(env, problems);
        if let Err(e) = redis::Client::open(url) {
            problems.push(Problem {
                key: "WEIR_BROKER_URL".into(),
                message: crate::secret::scrub(&format!("bad Redis URL: {e}"), &[url]),
            });
        }
        RedisConfig {
            url: url.to_owned(),
            prefix,
            retention,
        }
    }

    /// Connects lazily; the API's limiter lives in the same Redis, shared by
    /// every replica.
    pub fn connect(&self) -> BrokerResult<Connected> {
        let broker: crate::broker::SharedBroker =
            Arc::new(RedisBroker::open(&self.url, &self.prefix, self.retention)?);
        Ok(Connected {
            limiter: Arc::new(BrokerRateLimiter(broker.clone())),
            broker,
        })
    }
}
