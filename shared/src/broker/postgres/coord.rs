//! Coordination on Postgres: keyed GCRA limiters and cooldowns in two
//! tables. A limiter decision takes the key's advisory lock for its
//! transaction (a key with no row yet has nothing else to lock), reads the
//! state and the server's clock, and writes the new state: one atomic step
//! every process shares.

use super::{PostgresBroker, from_sqlx};
use crate::broker::{BrokerResult, Coordination};
use crate::job::duration_ms;
use crate::limit::{Decision, KeyedRate};
use async_trait::async_trait;
use sqlx::postgres::PgPool;
use std::collections::HashMap;
use std::time::Duration;

/// Rows of spent limiters and ended cooldowns deleted per maintenance pass.
const SWEEP_BATCH: i64 = 1000;

#[async_trait]
impl Coordination for PostgresBroker {
    async fn admit(&self, key: &str, rate: KeyedRate, cost: u32) -> BrokerResult<Decision> {
        let mut tx = self.pool.begin().await.map_err(from_sqlx)?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('weir.coord:' || $1, 0))")
            .bind(key)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        // A statement of its own, after the lock: its snapshot holds what
        // the previous holder committed.
        let (tat, now): (Option<i64>, i64) = sqlx::query_as(
            "SELECT (SELECT tat FROM coord_limits WHERE key = $1), \
                    (extract(epoch FROM clock_timestamp()) * 1000000)::bigint",
        )
        .bind(key)
        .fetch_one(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        let step = rate.step(tat.unwrap_or(0), now, cost);
        if step.allowed {
            sqlx::query(
                "INSERT INTO coord_limits (key, tat) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET tat = EXCLUDED.tat",
            )
            .bind(key)
            .bind(step.tat)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        }
        tx.commit().await.map_err(from_sqlx)?;
        Ok(step.decision())
    }

    async fn cool(&self, key: &str, period: Duration) -> BrokerResult<()> {
        sqlx::query(
            "INSERT INTO coord_cooldowns AS c (key, until_ms) VALUES ($1, now_ms() + $2) \
             ON CONFLICT (key) DO UPDATE SET until_ms = greatest(c.until_ms, EXCLUDED.until_ms)",
        )
        .bind(key)
        .bind(duration_ms(period))
        .execute(&self.pool)
        .await
        .map_err(from_sqlx)?;
        Ok(())
    }

    async fn cooling(&self, keys: &[String]) -> BrokerResult<Vec<Option<Duration>>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT key, until_ms - now_ms() FROM coord_cooldowns \
             WHERE key = ANY ($1::text[]) AND until_ms > now_ms()",
        )
        .bind(keys)
        .fetch_all(&self.pool)
        .await
        .map_err(from_sqlx)?;
        let left: HashMap<String, i64> = rows.into_iter().collect();
        Ok(keys
            .iter()
            .map(|k| {
                left.get(k)
                    .map(|ms| Duration::from_millis(u64::try_from(*ms).unwrap_or(0)))
            })
            .collect())
    }

    async fn count(&self, key: &str, by: i64, ttl: Duration) -> BrokerResult<()> {
        sqlx::query(
            "INSERT INTO coord_counters AS c (key, value, expires_at) \
             VALUES ($1, $2, now_ms() + $3) \
             ON CONFLICT (key) DO UPDATE SET \
             value = CASE WHEN c.expires_at <= now_ms() THEN EXCLUDED.value \
                          ELSE c.value + EXCLUDED.value END, \
             expires_at = EXCLUDED.expires_at",
        )
        .bind(key)
        .bind(by)
        .bind(duration_ms(ttl))
        .execute(&self.pool)
        .await
        .map_err(from_sqlx)?;
        Ok(())
    }

    async fn counters(&self, keys: &[String]) -> BrokerResult<Vec<i64>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT key, value FROM coord_counters \
             WHERE key = ANY ($1::text[]) AND expires_at > now_ms()",
        )
        .bind(keys)
        .fetch_all(&self.pool)
        .await
        .map_err(from_sqlx)?;
        Ok(crate::broker::capability::in_key_order(keys, rows))
    }
}

/// Deletes limiter rows whose bucket is full again and ended cooldowns,
/// in bounded batches (part of the maintenance pass).
pub(super) async fn sweep(pool: &PgPool) -> BrokerResult<()> {
    // Each table with the condition of a row whose time has passed.
    for (table, passed) in [
        (
            "coord_limits",
            "tat < (extract(epoch FROM clock_timestamp()) * 1000000)::bigint",
        ),
        ("coord_cooldowns", "until_ms < now_ms()"),
        ("coord_counters", "expires_at < now_ms()"),
    ] {
        let sql = format!(
            "DELETE FROM {table} WHERE key IN (SELECT key FROM {table} \
             WHERE {passed} LIMIT $1 FOR UPDATE SKIP LOCKED)"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(SWEEP_BATCH)
            .execute(pool)
            .await
            .map_err(from_sqlx)?;
    }
    Ok(())
}
