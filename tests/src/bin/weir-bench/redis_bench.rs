//! The Redis half of the benchmark: drain, HTTP enqueue, latency and
//! I/O-bound throughput with `weir api` and `weir worker` as separate
//! processes on the Redis at `WEIR_BENCH_REDIS_URL` (default db 14 of the
//! local server), each run under its own key prefix, deleted afterwards.

use super::{http_table, latency_table};
use anyhow::{Result, bail};
use redis::Commands;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use weir_shared::broker::redis::PrefixCleanup;
use weir_tests::{Sandbox, wait_until};

pub(crate) fn url() -> String {
    std::env::var("WEIR_BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/14".into())
}

struct Run {
    sandbox: Sandbox,
    prefix: String,
    conn: redis::Connection,
    /// Deletes the run's keys afterwards.
    _cleanup: PrefixCleanup,
}

impl Run {
    fn new() -> Result<Self> {
        let prefix = format!("weirbench-{}", uuid::Uuid::now_v7().simple());
        let mut sandbox = Sandbox::new();
        sandbox
            .set("WEIR_BROKER_URL", &url())
            .set("WEIR_REDIS_PREFIX", &prefix)
            .set("WEIR_AUTH", "disabled")
            .set("WEIR_LOG", "warn");
        let conn = redis::Client::open(url())?.get_connection()?;
        Ok(Run {
            sandbox,
            _cleanup: PrefixCleanup {
                url: url(),
                prefix: prefix.clone(),
            },
            prefix,
            conn,
        })
    }

    fn finished(&mut self, queue: &str) -> Result<(u64, f64, f64)> {
        let key = format!("{}:{{q:{queue}}}:succeeded", self.prefix);
        let n: u64 = self.conn.zcard(&key)?;
        let first: Vec<(String, f64)> = self.conn.zrange_withscores(&key, 0, 0)?;
        let last: Vec<(String, f64)> = self.conn.zrange_withscores(&key, -1, -1)?;
        Ok((
            n,
            first.first().map(|x| x.1).unwrap_or(0.0),
            last.first().map(|x| x.1).unwrap_or(0.0),
        ))
    }
}

/// Enqueues `n` jobs of `task` in bulk, drains them with one node; returns
/// (bulk enqueue jobs/s, drain jobs/s from the finish times).
pub(crate) async fn drain(
    task: &str,
    payload: &str,
    n: u64,
    worker: &[&str],
    extra_ms: f64,
    env: &[(&str, &str)],
) -> Result<(f64, f64)> {
    let mut run = Run::new()?;
    for (k, v) in env {
        run.sandbox.set(k, v);
    }
    let started = Instant::now();
    let out = run.sandbox.cli(&[
        "enqueue",
        task,
        "--payload",
        payload,
        "--count",
        &n.to_string(),
    ]);
    if !out.status.success() {
        bail!("enqueue failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let enqueue = n as f64 / started.elapsed().as_secs_f64();
    let mut args = vec!["worker"];
    args.extend_from_slice(worker);
    let _node = run.sandbox.spawn("worker", &args);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (done, first, last) = run.finished("default")?;
        if done >= n {
            // Finish times span the drain but for the first job's own run.
            return Ok((enqueue, n as f64 / ((last - first + extra_ms) / 1000.0)));
        }
        if Instant::now() > deadline {
            bail!("drain did not finish: {done} of {n}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn report() -> Result<()> {
    println!(
        "## weir on Redis (`weir api` and `weir worker` as separate processes, Redis on the same host)\n"
    );
    println!("### Drain by one worker node\n");
    println!("| jobs | worker | bulk enqueue | drain |");
    println!("|---|---|---|---|");
    for (procs, slots) in [("1", "512"), ("2", "1024"), ("2", "2")] {
        let (e, d) = drain(
            "weir.noop",
            "{}",
            100_000,
            &["--processes", procs, "-c", slots],
            1.0,
            &[],
        )
        .await?;
        println!(
            "| 100,000 `weir.noop` | `--processes {procs} -c {slots}` | {e:.0} jobs/s | {d:.0} jobs/s |"
        );
    }
    let (_, d) = drain(
        "weir.sleep",
        "{\"ms\":50}",
        10_000,
        &["--processes", "1", "-c", "1000"],
        50.0,
        &[],
    )
    .await?;
    println!(
        "| 10,000 `weir.sleep` 50 ms | `--processes 1 -c 1000` (bound: 20,000/s) | - | {d:.0} jobs/s |"
    );

    http_report().await?;

    // Latency: a warm worker, jobs at a fixed rate, start - enqueue from Redis time.
    let mut run = Run::new()?;
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
    let http = weir_tests::http_client();
    let (rate, seconds) = (500u64, 10u64);
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let mut next = start;
    let mut ids = Vec::new();
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
        if let Some(id) = r["id"].as_str() {
            ids.push(id.to_owned());
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut lat = Vec::new();
    for id in &ids {
        let key = format!("{}:j:{id}", run.prefix);
        let (spec, started): (Option<String>, Option<f64>) = redis::cmd("HMGET")
            .arg(&key)
            .arg("spec")
            .arg("started_at")
            .query(&mut run.conn)?;
        // created_at is the 7th line of the job's spec (see common.lua).
        let created = spec.and_then(|s| s.split('\n').nth(6).and_then(|c| c.parse::<f64>().ok()));
        if let (Some(c), Some(s)) = (created, started) {
            lat.push(s - c);
        }
    }
    if lat.len() != ids.len() {
        bail!(
            "{} of {} latency jobs were found started",
            lat.len(),
            ids.len()
        );
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "\n### Enqueue->start latency at {rate} jobs/s for {seconds} s (Redis time, ms resolution)\n"
    );
    latency_table(&lat);
    Ok(())
}

/// HTTP enqueue alone: single jobs and batches into `weir api` with the
/// queue paused.
pub async fn http_report() -> Result<()> {
    let run = Run::new()?;
    let api = run.sandbox.api().await;
    let (status, _) = api.post("/v1/queues/default/pause", &json!({})).await;
    if status != 200 {
        bail!("pause failed");
    }
    println!("\n### HTTP enqueue into `weir api` (queue paused: enqueue alone)\n");
    http_table(&api.base, &[1, 16, 64]).await
}

/// Limits that never bind: a cap far above the slots and a rate far above
/// the drain, so the runs measure what admission itself costs.
pub(crate) const LOOSE_LIMITS: [(&str, &str); 2] = [
    ("WEIR_CONCURRENCY_LIMITS", "weir.noop=1000000"),
    ("WEIR_RATE_LIMITS", "weir.noop=1000000/s:100000"),
];

/// Drain of `weir.noop` with a cap and a rate that never bind, against none.
pub async fn flow_report() -> Result<()> {
    println!("### Redis: drain of 100,000 `weir.noop`, `--processes 1 -c 512`\n");
    println!("| run | no limits | cap + rate (never binding) | cost |");
    println!("|---|---|---|---|");
    let mut costs = Vec::new();
    for run in 1..=3 {
        let args = ["--processes", "1", "-c", "512"];
        let (_, plain) = drain("weir.noop", "{}", 100_000, &args, 1.0, &[]).await?;
        let (_, limited) = drain("weir.noop", "{}", 100_000, &args, 1.0, &LOOSE_LIMITS).await?;
        let cost = (1.0 - limited / plain) * 100.0;
        costs.push(cost);
        println!("| {run} | {plain:.0} jobs/s | {limited:.0} jobs/s | {cost:.0}% |");
    }
    costs.sort_by(f64::total_cmp);
    println!("| median | | | {:.0}% |", costs[1]);
    Ok(())
}
