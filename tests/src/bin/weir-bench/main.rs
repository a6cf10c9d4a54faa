//! weir's benchmark on the embedded SQLite broker: bulk and HTTP enqueue
//! rates, the drain rate of 100,000 `weir.noop` jobs by one worker node,
//! and enqueue->start latency at a fixed rate. Every figure comes from the
//! real release binary; timestamps come from the jobs themselves.
//!
//! Run: `scripts/bench` (builds in release mode and prints a Markdown report).

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use sqlx::Row;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_tests::{Sandbox, wait_until};

mod celery_bench;
mod defaults_bench;
mod index_bench;
mod list_bench;
mod outbound_bench;
mod postgres_bench;
mod redis_bench;
mod workflow_bench;

const DRAIN_JOBS: u64 = 100_000;

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{cores} cores, {cpu}")
}

async fn db(sandbox: &Sandbox) -> Result<sqlx::SqlitePool> {
    let path = sandbox.dir.path().join("weir.db");
    Ok(sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display())).await?)
}

/// Jobs that succeeded in every queue, by `weir queues --json`.
fn succeeded(sandbox: &Sandbox) -> u64 {
    let out = sandbox.cli(&["queues", "--json"]);
    let q: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    q["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|q| q["counts"]["succeeded"].as_u64())
        .sum()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Enqueues with `weir enqueue --count` and drains with one worker node;
/// returns the bulk enqueue and drain rates.
async fn drain(processes: u32, slots: u32) -> Result<(f64, f64)> {
    let (p, c) = (processes.to_string(), slots.to_string());
    let run = drain_with(DRAIN_JOBS, &["--processes", &p, "-c", &c], &[]).await?;
    Ok((run.enqueue, run.drain))
}

struct Load {
    requests: u64,
    jobs_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `clients` loops POSTing `body` to `path` for `seconds`.
async fn load(
    base: &str,
    path: &str,
    body: Value,
    jobs_per_request: u64,
    clients: usize,
    seconds: u64,
) -> Result<Load> {
    let body = Arc::new(body.to_string());
    let url = Arc::new(format!("{base}{path}"));
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (body, url) = (body.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let http = weir_tests::http_client();
            let mut latencies = Vec::new();
            while Instant::now() < end {
                let t = Instant::now();
                let r = http
                    .post(url.as_str())
                    .header("content-type", "application/json")
                    .body(body.as_str().to_owned())
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 201 => {
                        latencies.push(t.elapsed().as_secs_f64() * 1000.0)
                    }
                    Ok(r) => return Err(anyhow::anyhow!("status {}", r.status())),
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(latencies)
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    Ok(Load {
        requests: all.len() as u64,
        jobs_per_s: (all.len() as u64 * jobs_per_request) as f64 / elapsed,
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
    })
}

/// Enqueue->start latency at `rate` jobs/s for `seconds`, from the jobs' own timestamps.
async fn latency(sandbox: &Sandbox, base: &str, rate: u64, seconds: u64) -> Result<Vec<f64>> {
    let http = weir_tests::http_client();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let mut ids = Vec::new();
    let mut next = start;
    while start.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep_until(next.into()).await;
        next += interval;
        let r: Value = http
            .post(format!("{base}/v1/jobs"))
            .json(&json!({"task": "weir.noop", "queue": "pipeline"}))
            .send()
            .await?
            .json()
            .await?;
        ids.push(r["id"].as_str().context("id")?.to_owned());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pool = db(sandbox).await?;
    let rows = sqlx::query(
        "SELECT started_at - created_at FROM jobs WHERE queue = 'pipeline' AND state = 'succeeded'",
    )
    .fetch_all(&pool)
    .await?;
    let mut lat: Vec<f64> = rows
        .iter()
        .filter_map(|r| r.try_get::<i64, _>(0).ok())
        .map(|v| v as f64)
        .collect();
    if lat.len() != ids.len() {
        bail!("{} of {} latency jobs finished", lat.len(), ids.len());
    }
    lat.sort_by(f64::total_cmp);
    Ok(lat)
}

#[tokio::main]
async fn main() -> Result<()> {
    if !Path::new(&weir_tests::weir_bin()).is_file() {
        bail!("build weir first: cargo build --release");
    }
    let git = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    println!("Machine: {}; weir {git}; {}\n", machine(), chrono_now());
    match std::env::args().nth(1).as_deref().unwrap_or("sqlite") {
        "sqlite" => sqlite_report().await,
        "redis" => redis_bench::report().await,
        "redis-http" => redis_bench::http_report().await,
        "postgres" => postgres_bench::report().await,
        "postgres-http" => postgres_bench::http_report().await,
        "postgres-cap" => postgres_bench::cap_report().await,
        "pool" => pool_report().await,
        "flow" => flow_report().await,
        "outbound" => outbound_bench::report().await,
        "list" => list_bench::report().await,
        "workflows" => workflow_bench::report().await,
        "index" => index_bench::report().await,
        "celery-ingress" => celery_bench::report().await,
        "defaults" => defaults_bench::report().await,
        other => {
            bail!(
                "unknown benchmark `{other}`: sqlite, redis, redis-http, postgres, postgres-http, postgres-cap, pool, flow, outbound, list, workflows, index, celery-ingress or defaults"
            )
        }
    }
}

async fn sqlite_report() -> Result<()> {
    println!("## weir on the embedded SQLite broker\n");

    println!("### Drain of {DRAIN_JOBS} `weir.noop` jobs by one worker node\n");
    println!("| worker | bulk enqueue (`weir enqueue --count`) | drain |");
    println!("|---|---|---|");
    for (processes, slots) in [(2, 2), (1, 1), (2, 256), (1, 256)] {
        let (enqueue, drain) = drain(processes, slots).await?;
        println!(
            "| `--processes {processes} -c {slots}` | {enqueue:.0} jobs/s | {drain:.0} jobs/s |"
        );
    }

    let mut sandbox = Sandbox::new();
    sandbox.set("WEIR_LOG", "warn");
    sandbox.set("WEIR_CONCURRENCY", "64");
    let dev = sandbox.dev().await;
    let (status, _) = dev.post("/v1/queues/default/pause", &json!({})).await;
    if status != 200 {
        bail!("pause failed");
    }
    println!("\n### HTTP enqueue into `weir dev` (queue paused, so only enqueue is measured)\n");
    http_table(&dev.base, &[1, 16]).await?;

    println!("\n### Enqueue->start latency in `weir dev` at 500 jobs/s for 10 s (ms resolution)\n");
    let lat = latency(&sandbox, &dev.base, 500, 10).await?;
    latency_table(&lat);
    Ok(())
}

fn chrono_now() -> String {
    Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// What one drain run measured.
pub(crate) struct DrainRun {
    /// Bulk enqueue rate of `weir enqueue --count`, jobs/s.
    pub(crate) enqueue: f64,
    /// Drain rate, jobs/s.
    pub(crate) drain: f64,
    /// The node's last child start-to-ready time.
    ready_ms: Option<u64>,
}

/// Enqueues `n` no-op jobs and drains them with `weir worker ARGS` on SQLite.
pub(crate) async fn drain_with(n: u64, args: &[&str], env: &[(&str, &str)]) -> Result<DrainRun> {
    let mut sandbox = Sandbox::new();
    for (k, v) in env {
        sandbox.set(k, v);
    }
    let started = Instant::now();
    let out = sandbox.cli(&["enqueue", "weir.noop", "--count", &n.to_string()]);
    if !out.status.success() {
        bail!("enqueue failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let enqueue = n as f64 / started.elapsed().as_secs_f64();
    sandbox.set("WEIR_LOG", "warn");
    let mut worker = vec!["worker"];
    worker.extend_from_slice(args);
    let _node = sandbox.spawn("worker", &worker);
    let pool = db(&sandbox).await?;
    let done = wait_until(Duration::from_secs(300), || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM jobs WHERE state = 'succeeded'")
            .fetch_one(&pool)
            .await
            .is_ok_and(|c| c as u64 == n)
    })
    .await;
    if !done {
        bail!("drain did not finish");
    }
    let row = sqlx::query("SELECT MIN(started_at), MAX(finished_at) FROM jobs")
        .fetch_one(&pool)
        .await?;
    let (first, last): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    tokio::time::sleep(Duration::from_millis(2500)).await; // one more heartbeat
    let nodes = sandbox.cli_json(&["workers", "--json"]);
    Ok(DrainRun {
        enqueue,
        drain: n as f64 / ((last - first) as f64 / 1000.0),
        ready_ms: nodes["data"][0]["child_ready_ms"].as_u64(),
    })
}

/// Flow control's cost: drains with a cap and a rate that never bind,
/// against none, on SQLite and on Redis.
async fn flow_report() -> Result<()> {
    println!("## Flow control: admission cost when limits never bind\n");
    println!("### SQLite: drain of 50,000 `weir.noop`, `--processes 1 -c 256`\n");
    println!("| run | no limits | cap + rate (never binding) | cost |");
    println!("|---|---|---|---|");
    let mut costs = Vec::new();
    for run in 1..=3 {
        let args = ["--processes", "1", "-c", "256"];
        let plain = drain_with(50_000, &args, &[]).await?.drain;
        let limited = drain_with(50_000, &args, &redis_bench::LOOSE_LIMITS)
            .await?
            .drain;
        let cost = (1.0 - limited / plain) * 100.0;
        costs.push(cost);
        println!("| {run} | {plain:.0} jobs/s | {limited:.0} jobs/s | {cost:.0}% |");
    }
    costs.sort_by(f64::total_cmp);
    println!("| median | | | {:.0}% |", costs[1]);
    println!();
    redis_bench::flow_report().await
}

/// Recycling's cost: drain with children replaced every 50 tasks against none.
async fn pool_report() -> Result<()> {
    println!("## Worker pools: recycling every 50 tasks against none (SQLite)\n");
    println!(
        "| worker | no recycling | `--max-tasks-per-child 50` | cost | child start-to-ready |"
    );
    println!("|---|---|---|---|---|");
    let n = 20_000;
    for (procs, slots) in [("2", "2"), ("2", "64")] {
        let base = ["--processes", procs, "-c", slots];
        let plain = drain_with(n, &base, &[]).await?.drain;
        let mut recycled_args = base.to_vec();
        recycled_args.extend(["--max-tasks-per-child", "50"]);
        let run = drain_with(n, &recycled_args, &[]).await?;
        let (recycled, ready) = (run.drain, run.ready_ms);
        println!(
            "| `--processes {procs} -c {slots}`, {n} `weir.noop` | {plain:.0} jobs/s | {recycled:.0} jobs/s | {:.0}% | {} |",
            (1.0 - recycled / plain) * 100.0,
            ready
                .map(|ms| format!("{ms} ms"))
                .unwrap_or_else(|| "-".into())
        );
    }
    Ok(())
}

/// Prints the HTTP enqueue table: single-job requests from each number of
/// `clients`, then 1,000-job batches from two clients, 8 s each.
pub(crate) async fn http_table(base: &str, clients: &[usize]) -> Result<()> {
    println!("| route | clients | requests | jobs/s | p50 | p99 |");
    println!("|---|---|---|---|---|---|");
    let batch: Vec<Value> = (0..1000).map(|_| json!({"task": "weir.noop"})).collect();
    let runs = clients
        .iter()
        .map(|c| {
            (
                "`POST /v1/jobs`",
                "/v1/jobs",
                json!({"task": "weir.noop"}),
                1,
                *c,
            )
        })
        .chain([(
            "`POST /v1/jobs/batch` (1,000 jobs)",
            "/v1/jobs/batch",
            json!({"jobs": batch}),
            1000,
            2,
        )]);
    for (label, path, body, per_request, clients) in runs {
        let l = load(base, path, body, per_request, clients, 8).await?;
        println!(
            "| {label} | {clients} | {} | {:.0} | {:.2} ms | {:.2} ms |",
            l.requests, l.jobs_per_s, l.p50_ms, l.p99_ms
        );
    }
    Ok(())
}

/// Prints the latency table of sorted millisecond latencies.
pub(crate) fn latency_table(sorted: &[f64]) {
    println!("| jobs | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|");
    println!(
        "| {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |",
        sorted.len(),
        percentile(sorted, 0.5),
        percentile(sorted, 0.9),
        percentile(sorted, 0.99),
        sorted.last().copied().unwrap_or(f64::NAN)
    );
}
