//! [`BrokerConfig`]: which backend a process uses and that backend's own
//! options, parsed from `WEIR_BROKER_URL` and the backend's environment
//! variables inside the backend's module (`sqlite/config.rs`,
//! `redis/config.rs`). Adding a backend adds one variant, one line of
//! [`REGISTRY`] and one arm of [`BrokerConfig::connect`].

use super::{BrokerResult, SharedBroker, postgres, redis, sqlite};
use crate::config::Problem;
use crate::limit::RateLimiter;
use std::sync::Arc;

/// The broker when `WEIR_BROKER_URL` names none: the embedded SQLite file.
pub const DEFAULT_BROKER_URL: &str = "sqlite://./weir-data/weir.db";

/// A variable a backend reads: name, default, when to change it.
pub type VarDoc = (&'static str, &'static str, &'static str);

/// Each backend's own variables (name, default, when to change it), for
/// `docs/configuration.md`.
pub const BACKEND_VARS: &[(&str, &[VarDoc])] = &[
    ("every broker", super::retention::VARS),
    ("sqlite", sqlite::config::VARS),
    ("redis", redis::config::VARS),
    ("postgres", postgres::config::VARS),
];

/// The environment as a lookup function (the process's, or a test's).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A backend and its options.
#[derive(Debug, Clone, PartialEq)]
pub enum BrokerConfig {
    /// `sqlite://PATH`: the embedded default.
    Sqlite(sqlite::SqliteConfig),
    /// `redis://HOST:PORT/DB` or `rediss://...`.
    Redis(redis::RedisConfig),
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE` or `postgresql://...`.
    Postgres(postgres::PostgresConfig),
}

/// One backend: the URL schemes it serves and how it reads its options.
struct Entry {
    schemes: &'static [&'static str],
    parse: fn(&str, Env<'_>, &mut Vec<Problem>) -> BrokerConfig,
}

/// Every backend this build has.
const REGISTRY: &[Entry] = &[
    Entry {
        schemes: &["sqlite"],
        parse: |url, env, problems| {
            BrokerConfig::Sqlite(sqlite::SqliteConfig::parse(url, env, problems))
        },
    },
    Entry {
        schemes: &["redis", "rediss"],
        parse: |url, env, problems| {
            BrokerConfig::Redis(redis::RedisConfig::parse(url, env, problems))
        },
    },
    Entry {
        schemes: &["postgres", "postgresql"],
        parse: |url, env, problems| {
            BrokerConfig::Postgres(postgres::PostgresConfig::parse(url, env, problems))
        },
    },
];

/// A broker and the rate limiter the API uses with it: shared through the
/// broker where a request's round trip is cheap (Redis), in-process
/// otherwise (a row write per HTTP request would cost more than it protects).
pub struct Connected {
    /// The broker.
    pub broker: SharedBroker,
    /// The API's rate limiter.
    pub limiter: Arc<dyn RateLimiter>,
}

impl BrokerConfig {
    /// Reads `WEIR_BROKER_URL` (default [`DEFAULT_BROKER_URL`]) and the
    /// chosen backend's variables, adding what is wrong to `problems`.
    pub fn from_env(env: Env<'_>, problems: &mut Vec<Problem>) -> BrokerConfig {
        let url = env("WEIR_BROKER_URL")
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| DEFAULT_BROKER_URL.into());
        Self::parse(&url, env, problems)
    }

    /// The backend `url` names, with its options from `env`.
    pub fn parse(url: &str, env: Env<'_>, problems: &mut Vec<Problem>) -> BrokerConfig {
        let scheme = url.split("://").next().unwrap_or(url);
        match REGISTRY.iter().find(|e| e.schemes.contains(&scheme)) {
            Some(entry) => (entry.parse)(url, env, problems),
            None => {
                let known: Vec<String> = REGISTRY
                    .iter()
                    .flat_map(|e| e.schemes.iter().map(|s| format!("{s}://")))
                    .collect();
                // The interface names the RabbitMQ transport; say that it
                // is absent rather than unknown.
                let what = if matches!(scheme, "amqp" | "amqps") {
                    "the RabbitMQ transport (`amqp://`) is not in this version".to_owned()
                } else {
                    format!("unsupported broker URL scheme `{scheme}`")
                };
                problems.push(Problem {
                    key: "WEIR_BROKER_URL".into(),
                    message: format!("{what}: this build supports {}", known.join(", ")),
                });
                Self::default()
            }
        }
    }

    /// The URL this configuration came from, with any password hidden.
    pub fn display_url(&self) -> String {
        match self {
            BrokerConfig::Sqlite(c) => format!("sqlite://{}", c.path),
            BrokerConfig::Redis(c) => crate::secret::redact_url(&c.url),
            BrokerConfig::Postgres(c) => crate::secret::redact_url(&c.url),
        }
    }

    /// The Redis server this broker lives on, if it is Redis (the cache
    /// warm-up writes there when a target names no other).
    pub fn redis_url(&self) -> Option<&str> {
        match self {
            BrokerConfig::Redis(c) => Some(&c.url),
            BrokerConfig::Sqlite(_) | BrokerConfig::Postgres(_) => None,
        }
    }

    /// Opens the broker and the API's rate limiter.
    pub async fn connect(&self) -> BrokerResult<Connected> {
        match self {
            BrokerConfig::Sqlite(c) => c.connect().await,
            BrokerConfig::Redis(c) => c.connect(),
            BrokerConfig::Postgres(c) => c.connect().await,
        }
    }

    /// `message` without the password of this broker's URL (for driver
    /// errors that may quote it).
    pub fn scrub(&self, message: &str) -> String {
        match self {
            BrokerConfig::Sqlite(_) => message.to_owned(),
            BrokerConfig::Redis(c) => crate::secret::scrub(message, &[&c.url]),
            BrokerConfig::Postgres(c) => crate::secret::scrub(message, &[&c.url]),
        }
    }

    /// How long finished jobs are kept.
    pub fn retention(&self) -> super::Retention {
        match self {
            BrokerConfig::Sqlite(c) => c.retention,
            BrokerConfig::Redis(c) => c.retention,
            BrokerConfig::Postgres(c) => c.retention,
        }
    }

    /// The SQLite file, if this broker is SQLite.
    pub fn sqlite_path(&self) -> Option<std::path::PathBuf> {
        match self {
            BrokerConfig::Sqlite(c) => Some(c.path.clone().into()),
            BrokerConfig::Redis(_) | BrokerConfig::Postgres(_) => None,
        }
    }

    /// Opens a broker that must exist already: a SQLite file that is not
    /// there is a [`crate::broker::BrokerError::Config`] naming the path looked at.
    pub async fn connect_existing(&self) -> BrokerResult<Connected> {
        match self {
            BrokerConfig::Sqlite(c) => {
                c.must_exist()?;
                c.connect().await
            }
            BrokerConfig::Redis(c) => c.connect(),
            BrokerConfig::Postgres(c) => c.connect().await,
        }
    }

    /// Opens the broker alone.
    pub async fn open(&self) -> BrokerResult<SharedBroker> {
        Ok(self.connect().await?.broker)
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        let mut ignored = Vec::new();
        Self::parse(DEFAULT_BROKER_URL, &|_| None, &mut ignored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str, vars: &[(&str, &str)]) -> (BrokerConfig, Vec<Problem>) {
        let env = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let mut problems = Vec::new();
        (BrokerConfig::parse(url, &env, &mut problems), problems)
    }

    #[test]
    fn each_scheme_finds_its_backend() {
        let (c, p) = parse("sqlite://./x.db", &[("WEIR_SQLITE_SYNC", "full")]);
        assert!(p.is_empty(), "{p:?}");
        assert!(
            matches!(c, BrokerConfig::Sqlite(ref s) if s.path == "./x.db" && s.durability == sqlite::Durability::Full)
        );
        let (c, p) = parse(
            "redis://:pw@127.0.0.1:6379/0",
            &[("WEIR_REDIS_PREFIX", "blue")],
        );
        assert!(p.is_empty(), "{p:?}");
        assert!(matches!(c, BrokerConfig::Redis(ref r) if r.prefix == "blue"));
        assert_eq!(c.display_url(), "redis://:***@127.0.0.1:6379/0");
        assert_eq!(c.redis_url(), Some("redis://:pw@127.0.0.1:6379/0"));
    }

    #[test]
    fn a_backends_own_variables_are_checked_only_when_it_is_chosen() {
        let (_, p) = parse("redis://127.0.0.1/0", &[("WEIR_SQLITE_SYNC", "sometimes")]);
        assert!(p.is_empty(), "{p:?}");
        let (_, p) = parse("sqlite://x.db", &[("WEIR_SQLITE_SYNC", "sometimes")]);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key, "WEIR_SQLITE_SYNC");
    }

    #[test]
    fn an_unknown_scheme_names_the_known_ones() {
        let (_, p) = parse("kafka://nowhere", &[]);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key, "WEIR_BROKER_URL");
        assert!(
            p[0].message
                .contains("sqlite://, redis://, rediss://, postgres://, postgresql://"),
            "{}",
            p[0].message
        );
    }

    #[test]
    fn an_amqp_url_is_told_the_transport_is_absent() {
        let (_, p) = parse("amqp://guest:guest@127.0.0.1:5672/%2f", &[]);
        assert_eq!(p.len(), 1);
        assert!(
            p[0].message
                .starts_with("the RabbitMQ transport (`amqp://`) is not in this version")
                && p[0].message.contains("redis://"),
            "{}",
            p[0].message
        );
    }
}
