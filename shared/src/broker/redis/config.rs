//! The Redis backend's options: the URL, `WEIR_REDIS_PREFIX` and
//! `WEIR_RETENTION`.

use super::RedisBroker;
use crate::broker::config::Env;
use crate::broker::{BrokerResult, Connected};
use crate::config::{Problem, parse_duration};
use crate::limit::BrokerRateLimiter;
use std::sync::Arc;
use std::time::Duration;

/// The variables this backend reads: name, default, when to change it.
pub const VARS: &[crate::broker::config::VarDoc] = &[
    (
        "WEIR_REDIS_PREFIX",
        "`weir`",
        "several deployments on one Redis",
    ),
    (
        "WEIR_RETENTION",
        "`24h`",
        "how long finished jobs stay readable",
    ),
];

/// Options of the Redis broker.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    /// `redis://[:PASSWORD@]HOST:PORT/DB` or `rediss://...`.
    pub url: String,
    /// `WEIR_REDIS_PREFIX` (default `weir`): every key starts with it, so
    /// several deployments can share one Redis.
    pub prefix: String,
    /// `WEIR_RETENTION` (default 24h): how long finished jobs stay readable.
    pub retention: Duration,
}

impl RedisConfig {
    /// Reads the URL, `WEIR_REDIS_PREFIX` and `WEIR_RETENTION`.
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
        let retention = match env("WEIR_RETENTION") {
            None => Duration::from_secs(24 * 3600),
            Some(v) => parse_duration(&v).unwrap_or_else(|message| {
                problems.push(Problem {
                    key: "WEIR_RETENTION".into(),
                    message,
                });
                Duration::from_secs(24 * 3600)
            }),
        };
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
