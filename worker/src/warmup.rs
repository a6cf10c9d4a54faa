//! `cache.warmup`: runs a warm-up target from `[warmup.NAME]`. Its query's
//! rows become Redis keys (from the key template, e.g. `app_config:{id}`)
//! holding each row as JSON, with the target's TTL plus a little jitter so
//! a whole cache does not expire at once, written in pipelined batches.
//! The payload only names the target (`{"target": "app_config"}`): SQL
//! never travels in a job.
//!
//! Failures: a database or Redis that cannot be reached is a failed attempt
//! that retries with the task's backoff; a query the database rejects, an
//! unknown target or a key template naming a missing column fails the job
//! at once with the reason.

use crate::task::{Context, Registry, TaskError};
use futures::TryStreamExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sqlx::{Column, Row, TypeInfo, ValueRef};
use std::sync::Arc;
use std::time::Duration;
use weir_shared::config::{Settings, WarmupTarget};

#[derive(Deserialize)]
struct WarmupJob {
    target: String,
}

/// Registers `cache.warmup` with the targets of `settings`.
pub(crate) fn register(registry: &mut Registry, settings: &Arc<Settings>) {
    let settings = settings.clone();
    registry.register("cache.warmup", move |ctx: Context, job: WarmupJob| {
        let settings = settings.clone();
        async move {
            // Driver errors may quote a URL: its password never reaches
            // the job's `error`.
            warm(&ctx, &settings, &job.target)
                .await
                .map_err(|e| e.map_message(|m| scrub(&settings, m)))
        }
    });
}

/// `message` without the password of any URL the warm-up could have used.
fn scrub(settings: &Settings, message: &str) -> String {
    let mut urls: Vec<&str> = settings.broker.redis_url().into_iter().collect();
    for target in settings.warmup.values() {
        urls.push(&target.database_url);
        urls.extend(target.redis_url.as_deref());
    }
    weir_shared::secret::scrub(message, &urls)
}

async fn warm(ctx: &Context, settings: &Settings, name: &str) -> Result<Value, TaskError> {
    let target = settings.warmup.get(name).ok_or_else(|| {
        let known: Vec<&str> = settings.warmup.keys().map(String::as_str).collect();
        TaskError::fatal(format!(
            "unknown warm-up target `{name}`; configured: {}",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ))
    })?;
    let redis_url = match (&target.redis_url, settings.broker.redis_url()) {
        (Some(url), _) => url.clone(),
        (None, Some(url)) => url.to_owned(),
        (None, None) => {
            return Err(TaskError::fatal(format!(
                "warm-up target `{name}` has no redis_url and the broker is not Redis"
            )));
        }
    };
    let client = redis::Client::open(redis_url.as_str())
        .map_err(|e| TaskError::fatal(format!("warm-up target `{name}`: bad redis_url: {e}")))?;
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| {
            TaskError::retry(format!("warm-up target `{name}`: Redis unreachable: {e}"))
        })?;
    let template = KeyTemplate::parse(&target.key);
    // The query is wrapped in a subquery below: a trailing `;` would end it.
    let query = target.query.trim().trim_end_matches(';');
    let mut written = Writer {
        name,
        target,
        template: &template,
        rows_read: 0,
        keys_written: 0,
        batch: Vec::new(),
    };
    if target.database_url.starts_with("sqlite://") {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&target.database_url)
            .await
            .map_err(|e| unreachable_db(name, &e))?;
        let sql = format!("SELECT * FROM ({query}) AS warmup_rows");
        let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch(&pool);
        while let Some(row) = rows.try_next().await.map_err(|e| query_failed(name, e))? {
            written.add(ctx, &mut redis, sqlite_row(&row)).await?;
        }
        drop(rows);
        pool.close().await;
    } else {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&target.database_url)
            .await
            .map_err(|e| unreachable_db(name, &e))?;
        // Postgres turns each row into JSON itself, whatever its column types.
        let sql = format!("SELECT row_to_json(warmup_rows)::text FROM ({query}) AS warmup_rows");
        let mut rows = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql)).fetch(&pool);
        while let Some(text) = rows.try_next().await.map_err(|e| query_failed(name, e))? {
            let row: Map<String, Value> = serde_json::from_str(&text)
                .map_err(|e| TaskError::fatal(format!("warm-up target `{name}`: {e}")))?;
            written.add(ctx, &mut redis, row).await?;
        }
        drop(rows);
        pool.close().await;
    }
    written.flush(ctx, &mut redis).await?;
    Ok(json!({
        "target": name,
        "rows_read": written.rows_read,
        "keys_written": written.keys_written,
    }))
}

fn unreachable_db(name: &str, e: &sqlx::Error) -> TaskError {
    TaskError::retry(format!(
        "warm-up target `{name}`: database unreachable: {e}"
    ))
}

fn query_failed(name: &str, e: sqlx::Error) -> TaskError {
    match e {
        sqlx::Error::Database(db) => TaskError::fatal(format!(
            "warm-up target `{name}`: the database rejected the query: {}",
            db.message()
        )),
        other => TaskError::retry(format!(
            "warm-up target `{name}`: reading rows failed: {other}"
        )),
    }
}

/// A row of any SQLite query as a JSON object.
fn sqlite_row(row: &sqlx::sqlite::SqliteRow) -> Map<String, Value> {
    let mut out = Map::new();
    for (i, column) in row.columns().iter().enumerate() {
        let raw = row.try_get_raw(i);
        let value = match raw {
            Ok(v) if v.is_null() => Value::Null,
            Ok(v) => match v.type_info().name() {
                "INTEGER" | "BOOLEAN" => row
                    .try_get::<i64, _>(i)
                    .map(Value::from)
                    .unwrap_or(Value::Null),
                "REAL" | "NUMERIC" => row
                    .try_get::<f64, _>(i)
                    .map(Value::from)
                    .unwrap_or(Value::Null),
                _ => row
                    .try_get::<String, _>(i)
                    .map(Value::from)
                    .unwrap_or(Value::Null),
            },
            Err(_) => Value::Null,
        };
        out.insert(column.name().to_owned(), value);
    }
    out
}

/// `app_config:{id}`: literal text and column names.
struct KeyTemplate {
    parts: Vec<(bool, String)>,
}

impl KeyTemplate {
    fn parse(text: &str) -> Self {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}') else {
                break;
            };
            parts.push((false, rest[..open].to_owned()));
            parts.push((true, rest[open + 1..open + close].to_owned()));
            rest = &rest[open + close + 1..];
        }
        parts.push((false, rest.to_owned()));
        KeyTemplate { parts }
    }

    fn render(&self, row: &Map<String, Value>) -> Result<String, String> {
        let mut key = String::new();
        for (column, text) in &self.parts {
            if !column {
                key.push_str(text);
                continue;
            }
            match row.get(text) {
                Some(Value::String(s)) => key.push_str(s),
                Some(Value::Null) | None => {
                    return Err(format!(
                        "the key template names column `{text}`, which the rows {}",
                        if row.contains_key(text) {
                            "leave null"
                        } else {
                            "do not have"
                        }
                    ));
                }
                Some(other) => key.push_str(&other.to_string()),
            }
        }
        Ok(key)
    }
}

struct Writer<'a> {
    name: &'a str,
    target: &'a WarmupTarget,
    template: &'a KeyTemplate,
    rows_read: u64,
    keys_written: u64,
    batch: Vec<(String, String)>,
}

impl Writer<'_> {
    async fn add(
        &mut self,
        ctx: &Context,
        redis: &mut redis::aio::MultiplexedConnection,
        row: Map<String, Value>,
    ) -> Result<(), TaskError> {
        self.rows_read += 1;
        let key = self
            .template
            .render(&row)
            .map_err(|e| TaskError::fatal(format!("warm-up target `{}`: {e}", self.name)))?;
        self.batch.push((key, Value::Object(row).to_string()));
        if self.batch.len() >= self.target.batch {
            self.flush(ctx, redis).await?;
        }
        Ok(())
    }

    async fn flush(
        &mut self,
        ctx: &Context,
        redis: &mut redis::aio::MultiplexedConnection,
    ) -> Result<(), TaskError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let ttl = weir_shared::job::duration_ms(self.target.ttl).unsigned_abs();
        // Up to `jitter` of the TTL on top, per key.
        let spread = (ttl as f64 * self.target.jitter) as u64;
        let mut pipe = redis::pipe();
        for (key, value) in self.batch.drain(..) {
            let extra = if spread > 0 {
                rand::random::<u64>() % (spread + 1)
            } else {
                0
            };
            pipe.cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(ttl.saturating_add(extra))
                .ignore();
            self.keys_written += 1;
        }
        let _: () = pipe.query_async(redis).await.map_err(|e| {
            TaskError::retry(format!(
                "warm-up target `{}`: writing to Redis failed: {e}",
                self.name
            ))
        })?;
        ctx.progress(json!({
            "target": self.name,
            "rows_read": self.rows_read,
            "keys_written": self.keys_written,
        }))
        .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_templates_render_columns() {
        let t = KeyTemplate::parse("app_config:{id}:{name}");
        let row: Map<String, Value> =
            serde_json::from_value(json!({"id": 7, "name": "bot"})).expect("object");
        assert_eq!(t.render(&row).as_deref(), Ok("app_config:7:bot"));
        let missing: Map<String, Value> = serde_json::from_value(json!({"id": 7})).expect("object");
        assert!(t.render(&missing).expect_err("no name").contains("`name`"));
    }
}
