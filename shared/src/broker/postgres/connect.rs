//! Opening the broker (schema, migrations under an advisory lock, the
//! pool with its `search_path`), and the error mapping.

use super::{PostgresBroker, PostgresConfig, enqueue, flow, notify};
use crate::broker::{BrokerError, BrokerResult};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// How long a call waits for a connection: long enough to ride out a fast
/// restart of the database, short enough that the API answers 503 with
/// `Retry-After` before a client's own timeout while the database is down.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Serializes schema creation and migration between processes starting at
/// once (sqlx's own migration lock is per database, taken after the
/// schema exists).
const SETUP_LOCK: i64 = 0x7765_6972_5f73_6574; // "weir_set"

impl PostgresBroker {
    /// Connects, creates the schema and applies migrations (once, however
    /// many processes start together), and opens the pool.
    pub async fn open(config: &PostgresConfig) -> BrokerResult<Self> {
        let options = PgConnectOptions::from_str(&config.url).map_err(|e| {
            BrokerError::Config(crate::secret::scrub(
                &format!("bad Postgres URL: {e}"),
                &[&config.url],
            ))
        })?;
        let options = options.application_name("weir");
        setup(&options, &config.schema, &config.url).await?;
        let schema = config.schema.clone();
        let pool = PgPoolOptions::new()
            .max_connections(config.pool)
            // A warm spare: a connection returned a moment ago may not be
            // back in the pool yet, and a new one costs a TLS handshake.
            .min_connections(config.pool.min(2))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(move |conn, _meta| {
                let set = format!("SET search_path TO {schema}");
                Box::pin(async move {
                    sqlx::Executor::execute(conn, sqlx::AssertSqlSafe(set)).await?;
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await
            .map_err(|e| scrubbed(e, &config.url))?;
        let wake = notify::Wake::start(&pool, options, &config.schema, config.notify);
        Ok(PostgresBroker {
            enqueuer: enqueue::Enqueuer::spawn(pool.clone(), wake.clone()),
            pool,
            wake,
            clocks: Arc::new(flow::Clocks::default()),
            retention: config.retention,
            audits: Arc::default(),
            promotions: Arc::default(),
        })
    }
}

/// Creates the schema and migrates it, under an advisory lock.
async fn setup(options: &PgConnectOptions, schema: &str, url: &str) -> BrokerResult<()> {
    let mut conn = PgConnection::connect_with(options)
        .await
        .map_err(|e| scrubbed(e, url))?;
    let result = async {
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(SETUP_LOCK)
            .execute(&mut conn)
            .await
            .map_err(from_sqlx)?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(schema)
                .fetch_one(&mut conn)
                .await
                .map_err(from_sqlx)?;
        if !exists {
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .execute(&mut conn)
                .await
                .map_err(|e| rights(e, schema))?;
        }
        sqlx::query(sqlx::AssertSqlSafe(format!("SET search_path TO {schema}")))
            .execute(&mut conn)
            .await
            .map_err(from_sqlx)?;
        // `run_direct` on the connection itself: `run` takes `Acquire`,
        // whose lifetimes make this future not provably `Send`.
        sqlx::migrate!("./migrations/postgres")
            .run_direct(None, &mut conn, false)
            .await
            .map_err(|e| match e {
                sqlx::migrate::MigrateError::Execute(e) => rights(e, schema),
                other => BrokerError::Unavailable(format!(
                    "migrating the Postgres schema `{schema}`: {other}"
                )),
            })
    }
    .await;
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(SETUP_LOCK)
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
    result
}

/// A refusal at setup: missing rights are the operator's to fix.
fn rights(e: sqlx::Error, schema: &str) -> BrokerError {
    match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("42501") => {
            BrokerError::Config(format!(
                "the database role may not create weir's tables in schema `{schema}` ({}): \
                 GRANT CREATE ON DATABASE to it, or create the schema for it \
                 (CREATE SCHEMA {schema} AUTHORIZATION <role>), or set WEIR_POSTGRES_SCHEMA \
                 to a schema it owns",
                db.message()
            ))
        }
        _ => from_sqlx(e),
    }
}

/// A connection error without the URL's password, refusals of the
/// operator's making (authentication, a missing database) as configuration.
fn scrubbed(e: sqlx::Error, url: &str) -> BrokerError {
    let code = match &e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    };
    let message = crate::secret::scrub(&e.to_string(), &[url]);
    match code.as_deref() {
        Some("28P01" | "28000") => BrokerError::Config(format!(
            "Postgres refused the login ({message}): check the user and password in the URL"
        )),
        Some("3D000") => BrokerError::Config(format!(
            "{message}: create it (createdb) or name an existing database in the URL"
        )),
        Some("42501") => BrokerError::Config(format!(
            "{message}: GRANT CONNECT on the database to the role"
        )),
        _ => match from_sqlx(e) {
            BrokerError::Unavailable(_) => {
                BrokerError::Unavailable(format!("cannot reach Postgres: {message}"))
            }
            other => other,
        },
    }
}

/// SQLSTATE classes of refusals that pass: connection trouble (08),
/// resources (53), operator intervention such as a restart (57), a
/// serialization failure or deadlock (40), a lock not available (55P03),
/// a read-only standby (25006).
fn passes(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57")
        || code.starts_with("40")
        || code == "55P03"
        || code == "25006"
}

/// Refusals that pass are unavailable; a unique index is a held key; bad
/// data (class 22: a NUL byte, a number out of range) is the caller's to
/// fix; the rest are bugs.
pub(super) fn from_sqlx(e: sqlx::Error) -> BrokerError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            BrokerError::UniqueKeyHeld { holder: None }
        }
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            if passes(&code) {
                BrokerError::Unavailable(e.to_string())
            } else if code.starts_with("22") {
                BrokerError::Invalid(format!("the database refused a value: {}", db.message()))
            } else {
                BrokerError::internal_from("Postgres", e)
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => BrokerError::Unavailable(e.to_string()),
        _ => BrokerError::internal_from("Postgres", e),
    }
}

/// For tests and benchmarks on a shared Postgres: drops a schema and all
/// it holds when dropped.
#[derive(Debug)]
pub struct SchemaCleanup {
    /// The database.
    pub url: String,
    /// The schema.
    pub schema: String,
}

impl Drop for SchemaCleanup {
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        // Drop runs inside or outside a runtime; a thread of its own with
        // its own runtime works in both.
        let done = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect(&url).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP SCHEMA IF EXISTS {schema} CASCADE"
                    )))
                    .execute(&mut conn)
                    .await;
                    let _ = conn.close().await;
                }
            });
        });
        let _ = done.join();
    }
}

#[cfg(feature = "testkit")]
impl SchemaCleanup {
    /// For tests: a broker on the test Postgres (`WEIR_TEST_POSTGRES_URL`)
    /// in a schema of its own (dropped with the guard), without
    /// notifications; `None` when the server is unreachable outside CI.
    pub async fn test_broker(pool: u32) -> Option<(PostgresBroker, SchemaCleanup)> {
        let url = crate::broker::conformance::service_url(
            "WEIR_TEST_POSTGRES_URL",
            "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
        )?;
        let schema = format!("weirtest_{}", uuid::Uuid::now_v7().simple());
        let guard = SchemaCleanup {
            url: url.clone(),
            schema: schema.clone(),
        };
        let broker = PostgresBroker::open(&crate::broker::postgres::PostgresConfig {
            url,
            schema,
            notify: false,
            pool,
            limiter_url: None,
            retention: crate::broker::Retention::default(),
        })
        .await
        .expect("Postgres test broker");
        Some((broker, guard))
    }
}
