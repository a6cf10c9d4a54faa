//! The Postgres backend's options: the URL, `WEIR_POSTGRES_SCHEMA`,
//! `WEIR_POSTGRES_NOTIFY`, `WEIR_POSTGRES_POOL` and the retention every
//! broker reads; `WEIR_REDIS_URL` optionally shares the API's request
//! limiter between replicas.

use super::PostgresBroker;
use crate::broker::config::Env;
use crate::broker::redis::RedisBroker;
use crate::broker::{BrokerResult, Connected, Retention};
use crate::config::Problem;
use crate::limit::{BrokerRateLimiter, LocalRateLimiter};
use std::sync::Arc;

/// The variables this backend reads: name, default, when to change it.
pub const VARS: &[crate::broker::config::VarDoc] = &[
    (
        "WEIR_POSTGRES_SCHEMA",
        "`weir`",
        "several deployments on one database (each gets its own tables)",
    ),
    (
        "WEIR_POSTGRES_NOTIFY",
        "`true`",
        "`false` behind PgBouncer in transaction mode, where LISTEN does not work: idle workers poll every 200 ms instead",
    ),
    (
        "WEIR_POSTGRES_POOL",
        "`10`",
        "connections per process; size max_connections for (processes x pool) + one listener each",
    ),
    (
        "WEIR_REDIS_URL",
        "unset",
        "with a Postgres broker, shares the API's per-key request limit between API replicas (else each replica counts alone)",
    ),
];

/// Options of the Postgres broker.
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresConfig {
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE?...`.
    pub url: String,
    /// `WEIR_POSTGRES_SCHEMA` (default `weir`): where weir's tables live.
    pub schema: String,
    /// `WEIR_POSTGRES_NOTIFY` (default true): wake idle workers with
    /// LISTEN/NOTIFY; false polls (PgBouncer in transaction mode).
    pub notify: bool,
    /// `WEIR_POSTGRES_POOL` (default 10): connections per process.
    pub pool: u32,
    /// `WEIR_REDIS_URL`: where the API's request limiter lives, if shared.
    pub limiter_url: Option<String>,
    /// How long finished jobs are kept.
    pub retention: Retention,
}

/// Is `name` a schema name weir can use unquoted?
fn plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
}

impl PostgresConfig {
    /// Reads the URL and the backend's variables, adding what is wrong to `problems`.
    pub fn parse(url: &str, env: Env<'_>, problems: &mut Vec<Problem>) -> Self {
        if let Err(e) = url.parse::<sqlx::postgres::PgConnectOptions>() {
            problems.push(Problem {
                key: "WEIR_BROKER_URL".into(),
                message: crate::secret::scrub(
                    &format!(
                        "bad Postgres URL: {e} (expected postgres://USER:PASSWORD@HOST:5432/DATABASE)"
                    ),
                    &[url],
                ),
            });
        }
        let schema = env("WEIR_POSTGRES_SCHEMA")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "weir".into());
        if !plain_identifier(&schema) {
            problems.push(Problem {
                key: "WEIR_POSTGRES_SCHEMA".into(),
                message: format!(
                    "`{schema}` must be 1-63 lower-case letters, digits or `_`, not starting with a digit"
                ),
            });
        }
        let notify = match env("WEIR_POSTGRES_NOTIFY").as_deref() {
            None | Some("") => true,
            Some(v) if ["true", "1", "on", "yes"].contains(&v.to_ascii_lowercase().as_str()) => {
                true
            }
            Some(v) if ["false", "0", "off", "no"].contains(&v.to_ascii_lowercase().as_str()) => {
                false
            }
            Some(v) => {
                problems.push(Problem {
                    key: "WEIR_POSTGRES_NOTIFY".into(),
                    message: format!("`{v}` is neither `true` nor `false`"),
                });
                true
            }
        };
        let pool = match env("WEIR_POSTGRES_POOL") {
            None => 10,
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (1..=1000).contains(&n) => n,
                _ => {
                    problems.push(Problem {
                        key: "WEIR_POSTGRES_POOL".into(),
                        message: format!("`{v}` is not a number of connections from 1 to 1000"),
                    });
                    10
                }
            },
        };
        let limiter_url = env("WEIR_REDIS_URL").filter(|u| !u.is_empty());
        if let Some(redis_url) = &limiter_url
            && let Err(e) = redis::Client::open(redis_url.as_str())
        {
            problems.push(Problem {
                key: "WEIR_REDIS_URL".into(),
                message: crate::secret::scrub(&format!("bad Redis URL: {e}"), &[redis_url]),
            });
        }
        PostgresConfig {
            url: url.to_owned(),
            schema,
            notify,
            pool,
            limiter_url,
            retention: Retention::from_env(env, problems),
        }
    }

    /// Opens the broker (migrating its schema); the API's limiter is in
    /// Redis when `WEIR_REDIS_URL` is set, else in this process.
    pub async fn connect(&self) -> BrokerResult<Connected> {
        let broker = PostgresBroker::open(self).await?;
        let limiter: Arc<dyn crate::limit::RateLimiter> = match &self.limiter_url {
            Some(url) => Arc::new(BrokerRateLimiter(Arc::new(RedisBroker::open(
                url,
                &self.schema,
                self.retention,
            )?))),
            None => Arc::new(LocalRateLimiter::default()),
        };
        Ok(Connected {
            broker: Arc::new(broker),
            limiter,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str, vars: &[(&str, &str)]) -> (PostgresConfig, Vec<Problem>) {
        let env = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let mut problems = Vec::new();
        (PostgresConfig::parse(url, &env, &mut problems), problems)
    }

    #[test]
    fn defaults_and_overrides() {
        let (c, p) = parse("postgres://u:pw@127.0.0.1:5432/test", &[]);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!((c.schema.as_str(), c.notify, c.pool), ("weir", true, 10));
        let (c, p) = parse(
            "postgresql://127.0.0.1/test",
            &[
                ("WEIR_POSTGRES_SCHEMA", "blue_2"),
                ("WEIR_POSTGRES_NOTIFY", "false"),
                ("WEIR_POSTGRES_POOL", "4"),
            ],
        );
        assert!(p.is_empty(), "{p:?}");
        assert_eq!((c.schema.as_str(), c.notify, c.pool), ("blue_2", false, 4));
    }

    #[test]
    fn bad_values_name_their_variable_and_hide_the_password() {
        let (_, p) = parse(
            "postgres://u:hunter2@127.0.0.1:notaport/test",
            &[
                ("WEIR_POSTGRES_SCHEMA", "Robert'); DROP"),
                ("WEIR_POSTGRES_NOTIFY", "sometimes"),
                ("WEIR_POSTGRES_POOL", "0"),
            ],
        );
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "WEIR_BROKER_URL",
                "WEIR_POSTGRES_SCHEMA",
                "WEIR_POSTGRES_NOTIFY",
                "WEIR_POSTGRES_POOL"
            ]
        );
        assert!(!p[0].message.contains("hunter2"), "{}", p[0].message);
    }
}
