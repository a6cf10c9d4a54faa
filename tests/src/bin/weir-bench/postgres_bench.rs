//! The Postgres part of the benchmark: drain, bulk and HTTP enqueue,
//! enqueue->start latency and a capped drain with `weir api` and `weir
//! worker` as separate processes on the Postgres at `WEIR_BENCH_POSTGRES_URL`
//! (default the local server's `test` database), each run in a schema of
//! its own, dropped afterwards; the same drain on SQLite and Redis in the
//! same run, side by side. For Postgres also: WAL bytes per job, the table's
//! size and dead tuples after the drain, the NOTIFYs that reached a
//! listener, and the drain while another session holds a snapshot open.

use super::{drain_with, http_table, latency_table, redis_bench};
use anyhow::{Result, bail};
use serde_json::{Value, json};
use sqlx::postgres::{PgListener, PgPool};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use weir_shared::broker::postgres::SchemaCleanup;
use weir_tests::{Sandbox, wait_until};

fn url() -> String {
    std::env::var("WEIR_BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test?sslmode=disable".into())
}

struct Run {
    sandbox: Sandbox,
    schema: String,
    pool: PgPool,
    _cleanup: SchemaCleanup,
}

impl Run {
    async fn new(env: &[(&str, &str)]) -> Result<Self> {
        let schema = format!("weirbench_{}", uuid::Uuid::now_v7().simple());
        let mut sandbox = Sandbox::new();
        sandbox
            .set("WEIR_BROKER_URL", &url())
            .set("WEIR_POSTGRES_SCHEMA", &schema)
            .set("WEIR_AUTH", "disabled")
            .set("WEIR_LOG", "warn");
        for (k, v) in env {
            sandbox.set(k, v);
        }
        Ok(Run {
            sandbox,
            pool: PgPool::connect(&url()).await?,
            _cleanup: SchemaCleanup {
                url: url(),
                schema: schema.clone(),
            },
            schema,
        })
    }

    async fn scalar(&self, sql: &str) -> Result<i64> {
        let sql = sql.replace("{s}", &self.schema);
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await?)
    }

    async fn wal_lsn(&self) -> Result<i64> {
        self.scalar("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint")
            .await
            .or_else(|_| {
                Ok(0) // not allowed for this role: report nothing rather than fail
            })
    }
}

/// What one Postgres drain measured.
struct Drain {
    enqueue: f64,
    drain: f64,
    wal_per_job: f64,
    table_mb: f64,
    dead: i64,
}

/// Drain rate of `n` no-op jobs by `weir worker` with no flags.
pub(crate) async fn drain_default(n: u64) -> Result<f64> {
    Ok(drain(n, &[], &[], false).await?.drain)
}

async fn drain(
    n: u64,
    worker: &[&str],
    env: &[(&str, &str)],
    hold_snapshot: bool,
) -> Result<Drain> {
    let run = Run::new(env).await?;
    let wal_before = run.wal_lsn().await?;
    let started = Instant::now();
    let out = run
        .sandbox
        .cli(&["enqueue", "weir.noop", "--count", &n.to_string()]);
    if !out.status.success() {
        bail!("enqueue failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let enqueue = n as f64 / started.elapsed().as_secs_f64();
    // The xmin pitfall, made visible: a session holding a snapshot open.
    let mut holder = None;
    if hold_snapshot {
        let mut tx = run.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *tx)
            .await?;
        sqlx::query("SELECT 1").execute(&mut *tx).await?;
        holder = Some(tx);
    }
    let mut args = vec!["worker"];
    args.extend_from_slice(worker);
    let _node = run.sandbox.spawn("worker", &args);
    let done = wait_until(Duration::from_secs(600), || async {
        run.scalar("SELECT count(*) FROM {s}.jobs WHERE state = 'succeeded'")
            .await
            .is_ok_and(|c| c as u64 == n)
    })
    .await;
    if !done {
        bail!("drain did not finish");
    }
    drop(holder);
    let first = run.scalar("SELECT min(started_at) FROM {s}.jobs").await?;
    let last = run.scalar("SELECT max(finished_at) FROM {s}.jobs").await?;
    let wal_after = run.wal_lsn().await?;
    tokio::time::sleep(Duration::from_secs(1)).await; // the workers' statistics reach the collector
    let _ = run
        .scalar("SELECT 0::bigint FROM pg_stat_force_next_flush()")
        .await;
    let table = run
        .scalar("SELECT pg_total_relation_size('{s}.jobs')")
        .await?;
    let dead = run
        .scalar(
            "SELECT coalesce(n_dead_tup, 0) FROM pg_stat_user_tables \
             WHERE schemaname = '{s}' AND relname = 'jobs'",
        )
        .await
        .unwrap_or(-1);
    Ok(Drain {
        enqueue,
        drain: n as f64 / ((last - first).max(1) as f64 / 1000.0),
        wal_per_job: (wal_after - wal_before) as f64 / n as f64,
        table_mb: table as f64 / 1048576.0,
        dead,
    })
}

/// The drain under a global cap of 5.
pub async fn cap_report() -> Result<()> {
    let capped = drain(
        20_000,
        &["--processes", "2", "-c", "64"],
        &[("WEIR_CONCURRENCY_LIMITS", "weir.noop=5")],
        false,
    )
    .await?;
    println!(
        "\n### Postgres: drain of 20,000 `weir.noop` under a global cap of 5 (`--processes 2 -c 64`)\n\n{:.0} jobs/s",
        capped.drain
    );
    Ok(())
}

/// HTTP enqueue with the queue paused.
pub async fn http_report() -> Result<()> {
    let run = Run::new(&[]).await?;
    let api = run.sandbox.api().await;
    let (status, _) = api.post("/v1/queues/default/pause", &json!({})).await;
    if status != 200 {
        bail!("pause failed");
    }
    println!("\n### Postgres: HTTP enqueue into `weir api` (queue paused: enqueue alone)\n");
    http_table(&api.base, &[1, 16, 64]).await
}

pub async fn report() -> Result<()> {
    let n = 100_000;
    println!(
        "## weir on Postgres (`weir worker` as a separate process, Postgres 15 on the same host, default settings)\n"
    );
    println!("### Drain of {n} `weir.noop`, side by side in one run\n");
    println!("| broker | worker | bulk enqueue | drain |");
    println!("|---|---|---|---|");
    for (procs, slots) in [("1", "512"), ("2", "512")] {
        let args = ["--processes", procs, "-c", slots];
        let sqlite = drain_with(n, &args, &[]).await?;
        println!(
            "| SQLite | `--processes {procs} -c {slots}` | {:.0} jobs/s | {:.0} jobs/s |",
            sqlite.enqueue, sqlite.drain
        );
        let (e, d) = redis_bench::drain("weir.noop", "{}", n, &args, 1.0, &[]).await?;
        println!("| Redis | `--processes {procs} -c {slots}` | {e:.0} jobs/s | {d:.0} jobs/s |");
        let pg = drain(n, &args, &[], false).await?;
        println!(
            "| Postgres | `--processes {procs} -c {slots}` | {:.0} jobs/s | {:.0} jobs/s |",
            pg.enqueue, pg.drain
        );
    }

    println!("\n### Postgres: what a drain of {n} leaves behind\n");
    println!("| run | drain | WAL per job | `jobs` table + indexes after | dead tuples after |");
    println!("|---|---|---|---|---|");
    let args = ["--processes", "2", "-c", "512"];
    for (label, hold) in [
        ("plain", false),
        ("a REPEATABLE READ snapshot held open throughout", true),
    ] {
        let d = drain(n, &args, &[], hold).await?;
        println!(
            "| {label} | {:.0} jobs/s | {:.0} bytes | {:.1} MB | {} |",
            d.drain, d.wal_per_job, d.table_mb, d.dead
        );
    }
    cap_report().await?;
    http_report().await?;

    // Latency: a warm worker, jobs at a fixed rate, start - created from the rows.
    let run = Run::new(&[]).await?;
    let api = run.sandbox.api().await;
    let _node = run
        .sandbox
        .spawn("worker", &["worker", "--processes", "1", "-c", "16"]);
    wait_until(Duration::from_secs(10), || async {
        api.get("/v1/workers").await.1["data"]
            .as_array()
            .is_some_and(|w| !w.is_empty())
    })
    .await;
    // Count the NOTIFYs that reach a listener (one per 20 ms per process at most).
    let notifies = Arc::new(AtomicU64::new(0));
    let mut listener = PgListener::connect(&url()).await?;
    listener.listen(&format!("weir_{}", run.schema)).await?;
    let counter = notifies.clone();
    let listening = tokio::spawn(async move {
        while listener.recv().await.is_ok() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    let http = weir_tests::http_client();
    let (rate, seconds) = (500u64, 10u64);
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let mut next = start;
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep_until(next.into()).await;
        next += interval;
        let r: Value = http
            .post(format!("{}/v1/jobs", api.base))
            .json(&json!({"task": "weir.noop", "queue": "pipeline"}))
            .send()
            .await?
            .json()
            .await?;
        if r["id"].is_string() {
            sent += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let sql = format!(
        "SELECT (started_at - created_at)::float8 FROM {}.jobs \
         WHERE queue = 'pipeline' AND started_at IS NOT NULL",
        run.schema
    );
    let mut lat: Vec<f64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_all(&run.pool)
        .await?;
    if lat.len() as u64 != sent {
        bail!("{} of {sent} latency jobs were found started", lat.len());
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "\n### Postgres: enqueue->start latency at {rate} jobs/s for {seconds} s (server time, ms resolution)\n"
    );
    latency_table(&lat);
    listening.abort();
    println!(
        "\n{sent} jobs enqueued one per request; {} NOTIFYs sent",
        notifies.load(Ordering::Relaxed)
    );
    Ok(())
}
