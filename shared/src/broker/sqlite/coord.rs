//! Coordination on SQLite: keyed GCRA limiters and cooldowns in two tables
//! (`0004_coordination.sql`), each decision one write transaction, so every
//! process on the file (a worker's children, the API) shares them. Time is
//! the host's clock, which every process on one file shares.

use super::{SqliteBroker, from_sqlx};
use crate::broker::{BrokerResult, Coordination};
use crate::job::{duration_ms, now_ms, now_us};
use crate::limit::{Decision, KeyedRate};
use async_trait::async_trait;
use std::collections::HashMap;
use std::time::Duration;

/// Rows of spent limiters and ended cooldowns deleted per maintenance pass.
const SWEEP_BATCH: i64 = 1000;

#[async_trait]
impl Coordination for SqliteBroker {
    async fn admit(&self, key: &str, rate: KeyedRate, cost: u32) -> BrokerResult<Decision> {
        let mut tx = self.begin().await?;
        let now = now_us();
        let tat: Option<i64> = sqlx::query_scalar("SELECT tat FROM coord_limits WHERE key = ?1")
            .bind(key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        let step = rate.step(tat.unwrap_or(0), now, cost);
        if step.allowed {
            sqlx::query(
                "INSERT INTO coord_limits (key, tat) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET tat = excluded.tat",
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
        let until = now_ms().0.saturating_add(duration_ms(period));
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO coord_cooldowns (key, until_ms) VALUES (?1, ?2) \
             ON CONFLICT (key) DO UPDATE SET until_ms = MAX(until_ms, excluded.until_ms)",
        )
        .bind(key)
        .bind(until)
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)
    }

    async fn cooling(&self, keys: &[String]) -> BrokerResult<Vec<Option<Duration>>> {
        let now = now_ms().0;
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT key, until_ms FROM coord_cooldowns \
             WHERE key IN (SELECT value FROM json_each(?1)) AND until_ms > ?2",
        )
        .bind(serde_json::to_string(keys).unwrap_or_default())
        .bind(now)
        .fetch_all(&self.reader)
        .await
        .map_err(from_sqlx)?;
        let until: HashMap<String, i64> = rows.into_iter().collect();
        Ok(keys
            .iter()
            .map(|k| {
                until
                    .get(k)
                    .map(|u| Duration::from_millis(u64::try_from(u - now).unwrap_or(0)))
            })
            .collect())
    }

    async fn count(&self, key: &str, by: i64, ttl: Duration) -> BrokerResult<()> {
        let now = now_ms().0;
        let expires = now.saturating_add(duration_ms(ttl));
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO coord_counters (key, value, expires_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (key) DO UPDATE SET \
             value = CASE WHEN coord_counters.expires_at <= ?4 THEN excluded.value \
                          ELSE coord_counters.value + excluded.value END, \
             expires_at = excluded.expires_at",
        )
        .bind(key)
        .bind(by)
        .bind(expires)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)
    }

    async fn counters(&self, keys: &[String]) -> BrokerResult<Vec<i64>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT key, value FROM coord_counters \
             WHERE key IN (SELECT value FROM json_each(?1)) AND expires_at > ?2",
        )
        .bind(serde_json::to_string(keys).unwrap_or_default())
        .bind(now_ms().0)
        .fetch_all(&self.reader)
        .await
        .map_err(from_sqlx)?;
        Ok(crate::broker::capability::in_key_order(keys, rows))
    }
}

/// Deletes limiter rows whose bucket is full again and ended cooldowns,
/// in bounded batches (part of the maintenance pass).
pub(super) async fn sweep(conn: &mut sqlx::SqliteConnection) -> BrokerResult<()> {
    // Each table with the column whose time has passed, and that time.
    for (table, column, now) in [
        ("coord_limits", "tat", now_us()),
        ("coord_cooldowns", "until_ms", now_ms().0),
        ("coord_counters", "expires_at", now_ms().0),
    ] {
        let sql = format!(
            "DELETE FROM {table} WHERE key IN (SELECT key FROM {table} WHERE {column} < ?1 LIMIT ?2)"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(SWEEP_BATCH)
            .execute(&mut *conn)
            .await
            .map_err(from_sqlx)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::broker::sqlite::{Durability, SqliteBroker};
    use crate::broker::{Broker, Coordination};
    use crate::limit::{KeyedRate, Rate};
    use std::time::Duration;

    /// Maintenance deletes spent limiter rows, ended cooldowns and
    /// forgotten counters, and keeps live ones.
    #[tokio::test]
    async fn maintenance_sweeps_what_has_passed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("weir.db");
        let broker = SqliteBroker::open(path.to_str().expect("utf-8"), Durability::Normal)
            .await
            .expect("broker");
        let fast = KeyedRate {
            rate: Rate {
                count: 1000,
                period: Duration::from_secs(1),
            },
            burst: 1,
        };
        broker.admit("spent", fast, 1).await.expect("admit");
        broker
            .cool("ended", Duration::from_millis(1))
            .await
            .expect("cool");
        broker
            .cool("live", Duration::from_secs(60))
            .await
            .expect("cool");
        broker
            .count("forgotten", 1, Duration::from_millis(1))
            .await
            .expect("count");
        broker
            .count("kept", 1, Duration::from_secs(60))
            .await
            .expect("count");
        tokio::time::sleep(Duration::from_millis(20)).await;
        broker.maintain().await.expect("maintain");
        let rows = |table: &'static str| {
            let pool = broker.reader.clone();
            async move {
                sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!(
                    "SELECT key FROM {table} ORDER BY key"
                )))
                .fetch_all(&pool)
                .await
                .expect("rows")
            }
        };
        assert!(rows("coord_limits").await.is_empty());
        assert_eq!(rows("coord_cooldowns").await, vec!["live"]);
        assert_eq!(rows("coord_counters").await, vec!["kept"]);
    }
}
