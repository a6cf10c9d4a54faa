//! The SQLite backend's options: the path from `sqlite://PATH` and
//! `WEIR_SQLITE_SYNC`.

use super::{Durability, SqliteBroker};
use crate::broker::config::Env;
use crate::broker::{BrokerResult, Connected};
use crate::config::Problem;
use crate::limit::LocalRateLimiter;
use std::sync::Arc;

/// The variables this backend reads: name, default, when to change it.
pub const VARS: &[crate::broker::config::VarDoc] = &[(
    "WEIR_SQLITE_SYNC",
    "`normal`",
    "`full` survives an OS crash too, at an fsync per commit",
)];

/// Options of the SQLite broker.
#[derive(Debug, Clone, PartialEq)]
pub struct SqliteConfig {
    /// The database file (created with its folder when missing).
    pub path: String,
    /// `WEIR_SQLITE_SYNC`: `normal` (default) survives a crash of any
    /// process; `full` also an OS crash, at an fsync per commit.
    pub durability: Durability,
    /// How long finished jobs are kept (deleted by maintenance).
    pub retention: crate::broker::Retention,
}

impl SqliteConfig {
    /// Reads `sqlite://PATH` and `WEIR_SQLITE_SYNC`.
    pub fn parse(url: &str, env: Env<'_>, problems: &mut Vec<Problem>) -> Self {
        let path = url.strip_prefix("sqlite://").unwrap_or(url).to_owned();
        if path.is_empty() {
            problems.push(Problem {
                key: "WEIR_BROKER_URL".into(),
                message: "`sqlite://` needs a path, e.g. sqlite://./weir-data/weir.db".into(),
            });
        }
        let durability = match env("WEIR_SQLITE_SYNC") {
            None => Durability::Normal,
            Some(v) if v.eq_ignore_ascii_case("normal") => Durability::Normal,
            Some(v) if v.eq_ignore_ascii_case("full") => Durability::Full,
            Some(v) => {
                problems.push(Problem {
                    key: "WEIR_SQLITE_SYNC".into(),
                    message: format!("`{v}` is neither `normal` nor `full`"),
                });
                Durability::Normal
            }
        };
        SqliteConfig {
            path,
            durability,
            retention: crate::broker::Retention::from_env(env, problems),
        }
    }

    /// An error naming the file when it does not exist.
    pub fn must_exist(&self) -> BrokerResult<()> {
        let path = std::path::Path::new(&self.path);
        if path.exists() {
            return Ok(());
        }
        let shown = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        Err(crate::broker::BrokerError::Config(format!(
            "no weir database at {}: run this from the directory `weir dev`, `weir api` or `weir worker` started in, or set WEIR_BROKER_URL=sqlite://PATH to their database",
            shown.display()
        )))
    }

    /// Opens the database; the API's limiter stays in-process.
    pub async fn connect(&self) -> BrokerResult<Connected> {
        let broker = SqliteBroker::open(&self.path, self.durability)
            .await?
            .with_retention(self.retention);
        Ok(Connected {
            broker: Arc::new(broker),
            limiter: Arc::new(LocalRateLimiter::default()),
        })
    }
}
